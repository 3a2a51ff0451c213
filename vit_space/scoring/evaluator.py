"""Proxy fitness on a bench split: trees -> per-arch scores -> correlations -> JCM.

The statistics of every (arch, dataset) of the split are read from the cache once (extracted on a
miss) and stacked, the stack itself cached as one file (StatsCache.stacked); evaluating a tree
afterwards touches no model at all.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from vit_space.data.bench import Bench, column_for
from vit_space.scoring.jcm import correlations, jcm, tied_pair_share
from vit_space.scoring.table import StatsTable
from vit_space.stats.cache import StatsCache
from vit_space.stats.parallel import fill_cache
from vit_space.stats.statistics import StatsConfig


@dataclass
class ProxyResult:
    jcm: float
    datasets: dict  # column -> {"kendall","spearman","pearson"} or None when invalid there
    scores: dict = field(repr=False, default_factory=dict)  # column -> per-arch scores

    @property
    def valid(self) -> bool:
        return all(c is not None for c in self.datasets.values())

    def tied_pairs(self) -> dict:
        """column -> share of arch pairs scored exactly alike (reported beside JCM)."""
        return {col: tied_pair_share(s) for col, s in self.scores.items()}

    def as_json(self) -> dict:
        ties = self.tied_pairs()
        mean_ties = sum(ties.values()) / len(ties) if ties else None
        return {"jcm": self.jcm, "datasets": self.datasets, "tied_pairs": ties,
                "tied_share": mean_ties}


@dataclass
class JCMSettings:
    """How per-data-set correlations join into JCM (see vit_space.scoring.jcm)."""
    metric: str = "kendall"
    absolute: bool = False
    weights: Optional[dict] = None


def result_from_scores(scores: dict, accuracies: dict, settings: JCMSettings) -> ProxyResult:
    per = {col: correlations(scores[col], accuracies[col]) for col in scores}
    value = jcm(per, settings.metric, settings.weights, settings.absolute)
    return ProxyResult(jcm=value, datasets=per, scores=scores)


class ProxyEvaluator:
    """Fitness of trees on `indices` of `bench`, over `datasets`, from cached statistics."""

    def __init__(self, bench: Bench, indices: Sequence[int], datasets: Sequence[str],
                 acc: str = "kd", cfg: StatsConfig = StatsConfig(), cache: Optional[StatsCache] = None,
                 device: str = "cpu", aggregate: str = "sum", settings: JCMSettings = JCMSettings(),
                 progress: bool = True, n_jobs: int = 1, backend: str = "loky",
                 scheduler: Optional[str] = None, label: str = ""):
        """`label` names the archs in the progress bar of a cold run (e.g. "search split")."""
        self.bench, self.indices, self.datasets = bench, list(indices), list(datasets)
        self.columns = [column_for(d, acc, bench.space) for d in self.datasets]
        self.accuracies = {c: bench.accuracies(self.indices, c) for c in self.columns}
        self.settings, self.cfg = settings, cfg
        self.cache = cache or StatsCache(device=device)
        archs = bench.archs(self.indices)
        items = [(bench.space, arch, d) for d in self.datasets for arch in archs]
        fill_cache(self.cache, items, cfg, n_jobs=n_jobs, backend=backend, scheduler=scheduler,
                   progress=progress, label=label or f"{len(self.indices)} archs")
        self.table = StatsTable(self.cache.stacked(items, cfg), device=device, aggregate=aggregate)

    def scores(self, tree) -> dict:
        flat = self.table.scores(tree)
        n = len(self.indices)
        return {col: flat[i * n:(i + 1) * n] for i, col in enumerate(self.columns)}

    def evaluate_scores(self, scores: dict) -> ProxyResult:
        return result_from_scores(scores, self.accuracies, self.settings)

    def evaluate(self, tree) -> ProxyResult:
        return self.evaluate_scores(self.scores(tree))
