"""The proxy score of a candidate arch, computed with only what the proxy needs.

`proxy_needs`: #params and FLOPs are counted (no model), trees over module sizes alone read a
meta-device model (no weights), only proxies that read weights build the model, and only those
that read data run the batch. Candidates' statistics stay in memory (the shared cache is read,
never written, unless keep_stats); scores are memoised per arch.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
from deap import gp

from vit_space.data.batches import make_batch
from vit_space.data.bench import column_for
from vit_space.data.datasets import NUM_CLASSES
from vit_space.data.spaces import arch_key
from vit_space.models.builders import build_model, transformer_blocks
from vit_space.models.costs import ANALYTIC_BASELINES, arch_cost, meta_model
from vit_space.scoring.baselines import BASELINES
from vit_space.scoring.ensemble import reference_ranks
from vit_space.scoring.proxies import resolve_proxy
from vit_space.scoring.ranking import proxy_scores
from vit_space.scoring.table import StatsTable
from vit_space.search.genes import plain
from vit_space.stats.cache import StatsCache
from vit_space.stats.parallel import release_freed_memory, run_parallel
from vit_space.stats.statistics import TENSOR_FIELDS, StatsConfig, extract_stats, extract_weight_stats

STRUCTURE_TERMINALS = frozenset({"msa_numel", "mlp_numel", "one"})
# weights and identities of their row counts: no batch needed (eye_msa_a is sized by activations)
WEIGHT_TERMINALS = STRUCTURE_TERMINALS | {"msa_w", "mlp_w", "eye_msa_w", "eye_mlp_w"}
NEEDS_ORDER = ("cost", "structure", "weights", "data")  # cheapest first


def proxy_needs(proxy) -> str:
    """What scoring PROXY on a new arch takes: "cost" (the analytic count), "structure" (module
    sizes of a meta-device model), "weights" (a built model) or "data" (the batch through it)."""
    if proxy.is_ensemble:  # what its neediest member takes
        return max((proxy_needs(resolve_proxy(m)) for m in proxy.members), key=NEEDS_ORDER.index)
    if proxy.formula is None:
        if proxy.name in ANALYTIC_BASELINES:
            return "cost"
        return "data" if BASELINES[proxy.name].needs_data else "weights"
    used = {node.value for node in proxy.tree if isinstance(node, gp.Terminal)}
    if used <= STRUCTURE_TERMINALS:
        return "structure"
    return "weights" if used <= WEIGHT_TERMINALS else "data"


def structure_stats(space: str, arch: dict, img_size: int, num_classes: int) -> dict:
    """Statistics with only the modules' sizes (the tensors empty): enough for trees over sizes,
    and equal to what extraction records for them."""
    empty = np.zeros((0,), np.float32)
    return {"blocks": [{**{field: empty for field in TENSOR_FIELDS},
                        "msa_numel": float(b.attn.qkv.weight.numel() + b.attn.proj.weight.numel()),
                        "mlp_numel": float(b.mlp.fc1.weight.numel() + b.mlp.fc2.weight.numel())}
                       for b in transformer_blocks(meta_model(space, arch, img_size, num_classes))]}


class CandidateScorer:
    """The score of one candidate, computed with only what the proxy needs. Picklable (the parsed
    tree and the batch are rebuilt lazily), so joblib workers can run it."""

    def __init__(self, proxy, space: str, cfg: StatsConfig, cache: StatsCache, dataset: str,
                 device: str = "cpu", aggregate: str = "sum", keep_stats: bool = False):
        self.proxy, self.space, self.cfg, self.cache = proxy, space, cfg, cache
        self.dataset, self.device, self.aggregate, self.keep_stats = dataset, device, aggregate, keep_stats
        self.needs = proxy_needs(proxy)
        self._tree = self._batch = None

    def __getstate__(self):
        return {**self.__dict__, "_tree": None, "_batch": None}

    def score(self, arch: dict, threads: int = 0) -> float:
        if threads:
            torch.set_num_threads(threads)
        cfg, classes = self.cfg, NUM_CLASSES[self.dataset]
        if self.needs == "cost":
            return ANALYTIC_BASELINES[self.proxy.name](arch_cost(self.space, arch, cfg.img_size, classes))
        if self.proxy.formula is not None:
            if self._tree is None:
                self._tree = self.proxy.tree
            stats = (structure_stats(self.space, arch, cfg.img_size, classes)
                     if self.needs == "structure" else self.statistics(arch))
            return float(StatsTable([stats], self.device, self.aggregate).scores(self._tree)[0])
        model = build_model(self.space, arch, classes, cfg.img_size, self.device)
        if self.needs == "data":
            if self._batch is None:
                self._batch = make_batch(self.dataset, cfg.batch_size, cfg.img_size, cfg.seed, cfg.data_root)
            images, labels = self._batch
        else:  # only the input shape matters
            images, labels = torch.zeros(1, 3, cfg.img_size, cfg.img_size), torch.zeros(1, dtype=torch.long)
        return float(BASELINES[self.proxy.name].fn(model, images.to(self.device),
                                                    labels.to(self.device), scope="all"))

    def statistics(self, arch: dict) -> dict:
        """A cached entry if one exists (read only); else extracted and kept in memory for this
        score alone (the weight sketches alone, without the batch, when the tree reads no more),
        unless keep_stats asks to store complete statistics in the cache."""
        if self.keep_stats:
            return self.cache.get(self.space, arch, self.dataset, self.cfg)
        stats = self.cache.load(self.cache.path(self.space, arch, self.dataset, self.cfg))
        if stats is None:
            extract = extract_weight_stats if self.needs == "weights" else extract_stats
            stats = extract(self.space, arch, self.dataset, self.cfg, self.device)
            release_freed_memory()
        return stats


class ArchScorer:
    """proxy score of any arch of `space` on one data set, memoised per arch. Callable on one arch;
    `many` scores a batch of candidates with a progress bar, over `n_jobs` joblib workers."""

    def __init__(self, proxy, space: str, cfg: StatsConfig, cache: StatsCache, dataset: str = "c100",
                 device: str = "cpu", aggregate: str = "sum", keep_stats: bool = False,
                 n_jobs: int = 1, backend: str = "loky", scheduler: Optional[str] = None,
                 progress: bool = False):
        column_for(dataset, "kd", space)  # validates the data set for the space
        self.proxy, self.space, self.cfg, self.cache, self.dataset = proxy, space, cfg, cache, dataset
        self.candidate = CandidateScorer(proxy, space, cfg, cache, dataset, device, aggregate, keep_stats)
        self.n_jobs, self.backend, self.scheduler, self.progress = n_jobs, backend, scheduler, progress
        self.memo: dict = {}

    @property
    def needs(self) -> str:
        return self.candidate.needs

    @classmethod
    def from_setup(cls, proxy, setup, aggregate: str = "sum", keep_stats: bool = False):
        """Scores on the first data set of the run's --datasets, with the run's --jobs (an
        ensemble: an EnsembleScorer over the run's bench)."""
        if proxy.is_ensemble:
            return EnsembleScorer(proxy, setup, aggregate, keep_stats)
        return cls(proxy, setup.bench.space, setup.cfg, setup.cache, setup.datasets[0], setup.device,
                   aggregate, keep_stats, setup.n_jobs, setup.backend, setup.scheduler, setup.progress)

    def __call__(self, arch: dict) -> float:
        key = arch_key(arch)
        if key not in self.memo:
            self.memo[key] = self.candidate.score(plain(arch))
        return self.memo[key]

    def many(self, archs: list, desc: str = "score candidates") -> list:
        """Scores of ARCHS in order; each distinct new arch is scored once."""
        todo: dict = {}
        for arch in archs:
            key = arch_key(arch)
            if key not in self.memo and key not in todo:
                todo[key] = plain(arch)
        if todo:
            analytic = self.needs == "cost"  # microseconds each: no workers, no bar
            jobs, backend = (1, "sequential") if analytic else (self.n_jobs, self.backend)
            tasks = [(arch, 1 if jobs != 1 else 0) for arch in todo.values()]
            values = run_parallel(self.candidate.score, tasks, jobs, backend, self.scheduler, desc,
                                  self.progress and not analytic)
            self.memo.update(zip(todo, values))
        return [self.memo[arch_key(arch)] for arch in archs]


class EnsembleScorer:
    """An ensemble's score of any arch, one arch at a time: the mean over its members of the
    arch's rank among the bench's archs under that member (reference_ranks). Over the bench's
    own archs this orders them as the ensemble's rank-average does; a new arch gets the ranks it
    would have among them. The members' bench scores are computed once (cached statistics)."""

    def __init__(self, proxy, setup, aggregate: str = "sum", keep_stats: bool = False):
        self.proxy, self.space, self.dataset = proxy, setup.bench.space, setup.datasets[0]
        members = [resolve_proxy(m) for m in proxy.members]
        self.members = [ArchScorer.from_setup(m, setup, aggregate, keep_stats) for m in members]
        column = column_for(self.dataset, setup.acc, self.space)
        bench = proxy_scores(setup, members, list(range(len(setup.bench))), aggregate)
        self.reference = [np.asarray(bench[m.name][column], dtype=np.float64) for m in members]
        self.memo: dict = {}

    @property
    def needs(self) -> str:
        return max((m.needs for m in self.members), key=NEEDS_ORDER.index)

    def many(self, archs: list, desc: str = "score candidates") -> list:
        ranks = [reference_ranks(m.many(archs, f"{desc}, member {i + 1}/{len(self.members)}"), ref)
                 for i, (m, ref) in enumerate(zip(self.members, self.reference))]
        values = np.mean(ranks, axis=0)
        for arch, value in zip(archs, values):
            self.memo[arch_key(arch)] = float(value)
        return [float(v) for v in values]

    def __call__(self, arch: dict) -> float:
        key = arch_key(arch)
        if key not in self.memo:
            self.many([arch])
        return self.memo[key]


def score_all(score: Callable, archs: list, desc: str = "score candidates") -> list:
    """A batch of scores: through the scorer's `many` (parallel, progress) where it has one."""
    many = getattr(score, "many", None)
    return many(archs, desc) if many else [score(arch) for arch in archs]
