"""Training-free architecture search: find the archs of a space a proxy likes best, under a budget.

Candidates are bench-format arch dicts, so anything found here can be built, ranked or written
to JSON like a bench record. Budgets are checked on the model's true size (224 px by default)
with an analytic count that is exact for both spaces (tests compare it with the built model and
the `flops` baseline), because a search checks thousands of candidates and a build costs ~0.1 s.
A candidate over budget is never scored. Scores are computed on the fly and memoised per arch:
tree proxies read the statistics cache, direct baselines build the model and call the baseline.
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from deap import base, creator

from vit_space.baselines import BASELINES
from vit_space.batches import make_batch
from vit_space.bench import column_for
from vit_space.cache import StatsCache
from vit_space.datasets import NUM_CLASSES
from vit_space.errors import BadInput, check_flags
from vit_space.models import MODEL_BUILDERS, build_model
from vit_space.ranking import proxy_scores
from vit_space.scoring import StatsTable
from vit_space.spaces import arch_key, get_space
from vit_space.statistics import StatsConfig

# ---------------------------------------------------------------- cost: params and FLOPs

PATCH_IN = 3 * 16 * 16  # inputs of one 16x16 RGB patch (both spaces' stems)


def _block_cost(dim: int, ratio: float, tokens: int) -> tuple:
    """One timm Block: LayerNorms, qkv+proj (with bias), MLP; FLOPs as FlopCounterMode counts them
    (2 per multiply-add of the linears, 4*T^2*D for the two attention matmuls)."""
    hidden = int(dim * ratio)
    params = 4 * dim * dim + 2 * dim * hidden + 9 * dim + hidden
    flops = 2 * tokens * (4 * dim * dim + 2 * dim * hidden) + 4 * tokens * tokens * dim
    return params, flops


def _autoformer_cost(arch: dict, img_size: int, num_classes: int) -> tuple:
    dim, patches = arch["hidden_dim"], (img_size // 16) ** 2
    tokens = patches + 1
    params = PATCH_IN * dim + dim + dim + tokens * dim + 2 * dim + dim * num_classes + num_classes
    flops = 2 * PATCH_IN * dim * patches + 2 * dim * num_classes
    for ratio in arch["mlp_ratio"]:
        p, f = _block_cost(dim, ratio, tokens)
        params, flops = params + p, flops + f
    return params, flops


def _pit_cost(arch: dict, img_size: int, num_classes: int) -> tuple:
    widths = [arch["base_dim"] * h for h in arch["num_heads"]]  # buildable: validate() checked
    grid = (img_size - 16) // 8 + 1
    params = PATCH_IN * widths[0] + widths[0] + widths[0] * grid * grid + widths[0]
    flops = 2 * PATCH_IN * widths[0] * grid * grid
    for i, (width, depth) in enumerate(zip(widths, arch["depth"])):
        if i:  # pooling: depthwise 3x3 stride-2 conv on the tokens, linear on the class token
            grid = (grid - 1) // 2 + 1
            prev = widths[i - 1]
            params += 10 * width + prev * width + width
            flops += 2 * 9 * width * grid * grid + 2 * prev * width
        p, f = _block_cost(width, arch["mlp_ratio"], grid * grid + 1)
        params, flops = params + depth * p, flops + depth * f
    last = widths[-1]
    return params + 2 * last + last * num_classes + num_classes, flops + 2 * last * num_classes


ANALYTIC_COSTS = {"autoformer": _autoformer_cost, "pit": _pit_cost}
_COSTS: dict = {}
_MAX_COSTS = 200_000  # memo entries kept (a long search checks many candidates)


def counted_cost(space: str, arch: dict, img_size: int = 224, num_classes: int = 100) -> tuple:
    """(params, FLOPs) counted on the model built on the meta device (no memory, no init) with
    the `flops` baseline: the reference the analytic counts are tested against."""
    get_space(space).validate(arch)
    try:
        with torch.device("meta"):
            model = MODEL_BUILDERS[space](arch, num_classes, img_size)
    except (ValueError, RuntimeError, AssertionError) as exc:
        raise BadInput(f"arch: cannot be built ({str(exc)[:80]})") from None
    images = torch.zeros(1, 3, img_size, img_size, device="meta")
    flops = BASELINES["flops"].fn(model, images, None)
    return sum(p.numel() for p in model.parameters()), int(flops)


def arch_cost(space: str, arch: dict, img_size: int = 224, num_classes: int = 100) -> tuple:
    """(params, FLOPs of one image), memoised per arch; BadInput if the arch cannot be built."""
    key = (space, arch_key(arch), img_size, num_classes)
    if key not in _COSTS:
        if len(_COSTS) >= _MAX_COSTS:
            _COSTS.clear()
        get_space(space).validate(arch)
        count = ANALYTIC_COSTS.get(space)
        _COSTS[key] = (count(arch, img_size, num_classes) if count
                       else counted_cost(space, arch, img_size, num_classes))
    return _COSTS[key]


@dataclass(frozen=True)
class Constraints:
    """A parameter / FLOP budget on the full-size model (img_size, num_classes of the data set)."""
    max_params: Optional[float] = None
    max_flops: Optional[float] = None
    img_size: int = 224
    num_classes: int = 100

    def cost(self, space: str, arch: dict) -> tuple:
        return arch_cost(space, arch, self.img_size, self.num_classes)

    def fits(self, space: str, arch: dict) -> bool:
        try:
            params, flops = self.cost(space, arch)
        except BadInput:  # unbuildable: never a candidate
            return False
        return ((self.max_params is None or params <= self.max_params)
                and (self.max_flops is None or flops <= self.max_flops))

    def check_feasible(self, space: str) -> None:
        """BadInput when even the smallest arch of the space is over budget."""
        for flag, limit in (("--max-params", self.max_params), ("--max-flops", self.max_flops)):
            if limit is not None and not (limit > 0 and math.isfinite(limit)):
                raise BadInput(f"{flag} {limit:g}: expected a positive number")
        params, flops = self.cost(space, smallest_arch(space))
        for flag, limit, value, unit in (("--max-params", self.max_params, params, "params"),
                                         ("--max-flops", self.max_flops, flops, "FLOPs")):
            if limit is not None and value > limit:
                raise BadInput(f"{flag} {limit:g}: no architecture of the {space} space fits "
                               f"(smallest has {value} {unit})")


# ---------------------------------------------------------------- genes <-> arch dicts

def plain(arch: dict) -> dict:
    """A plain-dict deep copy (individuals are dict subclasses; the cache and JSON want dicts)."""
    return {k: list(v) if isinstance(v, list) else v for k, v in arch.items()}


def decode(space: str, genome: list) -> dict:
    """Gene values -> a valid arch; per-block lists longer than an integer depth are cut to it."""
    arch: dict = {}
    for (field, index, _), value in zip(get_space(space).genes(), genome):
        if index is None:
            arch[field] = value
        else:
            arch.setdefault(field, []).append(value)
    if isinstance(arch.get("depth"), int):
        for field, value in arch.items():
            if isinstance(value, list):
                arch[field] = value[:arch["depth"]]
    return get_space(space).validate(arch)


def try_decode(space: str, genome: list) -> Optional[dict]:
    """decode(), or None for gene combinations the space forbids (e.g. PiT heads that shrink)."""
    try:
        return decode(space, genome)
    except BadInput:
        return None


def encode(space: str, arch: dict, rng: random.Random) -> list:
    """Arch -> gene values; positions past the depth get random choices (they are inactive)."""
    genome = []
    for field, index, choices in get_space(space).genes():
        if index is None:
            genome.append(arch[field])
        else:
            values = arch[field]
            genome.append(values[index] if index < len(values) else rng.choice(choices))
    return genome


def active_genes(space: str, arch: dict) -> list:
    """Positions of the genes that change `arch` when changed."""
    return [i for i, (field, index, _) in enumerate(get_space(space).genes())
            if index is None or index < len(arch[field])]


def smallest_arch(space: str) -> dict:
    """Every gene at its smallest choice: the cheapest arch (cost grows with every gene)."""
    return decode(space, [min(choices) for _, _, choices in get_space(space).genes()])


def mutate_arch(space: str, arch: dict, rng: random.Random, constraints: Constraints,
                max_tries: int = 50) -> dict:
    """Resample one active gene to another choice; retry until within budget, else keep the arch."""
    genes = get_space(space).genes()
    active = active_genes(space, arch)
    for _ in range(max_tries):
        genome = encode(space, arch, rng)
        i = rng.choice(active)
        others = [c for c in genes[i][2] if c != genome[i]]
        if others:
            genome[i] = rng.choice(others)
        child = try_decode(space, genome)
        if child is not None and constraints.fits(space, child):
            return child
    return plain(arch)


def crossover_archs(space: str, a: dict, b: dict, rng: random.Random, constraints: Constraints,
                    max_tries: int = 50, swap: float = 0.5) -> tuple:
    """Uniform crossover over the genes; retry until both children are within budget, else
    return copies of the parents."""
    for _ in range(max_tries):
        ga, gb = encode(space, a, rng), encode(space, b, rng)
        for i in range(len(ga)):
            if rng.random() < swap:
                ga[i], gb[i] = gb[i], ga[i]
        ca, cb = try_decode(space, ga), try_decode(space, gb)
        if ca is not None and cb is not None and constraints.fits(space, ca) and constraints.fits(space, cb):
            return ca, cb
    return plain(a), plain(b)


def sample_fitting(space: str, rng: random.Random, constraints: Constraints, n: int,
                   max_attempts: Optional[int] = None) -> list:
    """Up to n distinct uniform samples within budget (bounded attempts). If none is found, the
    smallest arch (feasible by check_feasible) stands in, so a search always has a candidate."""
    found, seen = [], set()
    for _ in range(max_attempts or max(1000, 100 * n)):
        arch = get_space(space).sample(rng)
        key = arch_key(arch)
        if key in seen or not constraints.fits(space, arch):
            continue
        seen.add(key)
        found.append(arch)
        if len(found) == n:
            break
    return found or [smallest_arch(space)]


# ---------------------------------------------------------------- scoring

class ArchScorer:
    """proxy score of any arch of `space` on one data set, memoised per arch. Callable."""

    def __init__(self, proxy, space: str, cfg: StatsConfig, cache: StatsCache, dataset: str = "c100",
                 device: str = "cpu", aggregate: str = "sum"):
        column_for(dataset, "kd", space)  # validates the data set for the space
        self.proxy, self.space, self.cfg, self.cache = proxy, space, cfg, cache
        self.dataset, self.device, self.aggregate = dataset, device, aggregate
        self.tree = proxy.tree if proxy.formula is not None else None
        self.baseline = None if self.tree is not None else BASELINES[proxy.name]
        self.memo: dict = {}
        self._batch = None

    @classmethod
    def from_setup(cls, proxy, setup, aggregate: str = "sum") -> "ArchScorer":
        """Scores on the first data set of the run's --datasets."""
        return cls(proxy, setup.bench.space, setup.cfg, setup.cache, setup.datasets[0],
                   setup.device, aggregate)

    def __call__(self, arch: dict) -> float:
        key = arch_key(arch)
        if key not in self.memo:
            self.memo[key] = self._compute(plain(arch))
        return self.memo[key]

    def _compute(self, arch: dict) -> float:
        cfg = self.cfg
        if self.tree is not None:
            stats = self.cache.get(self.space, arch, self.dataset, cfg)
            return float(StatsTable([stats], self.device, self.aggregate).scores(self.tree)[0])
        model = build_model(self.space, arch, NUM_CLASSES[self.dataset], cfg.img_size).to(self.device)
        if self.baseline.needs_data:
            if self._batch is None:
                self._batch = make_batch(self.dataset, cfg.batch_size, cfg.img_size, cfg.seed, cfg.data_root)
            images, labels = self._batch
        else:  # only the input shape matters
            images, labels = torch.zeros(1, 3, cfg.img_size, cfg.img_size), torch.zeros(1, dtype=torch.long)
        value = self.baseline.fn(model, images.to(self.device), labels.to(self.device), scope="all")
        return float(value)


def _order(score: float) -> float:
    return score if math.isfinite(score) else -math.inf


# ---------------------------------------------------------------- strategies

@dataclass
class ArchSearchConfig:
    strategy: str = "random"
    samples: int = 1000
    pop: int = 20
    gens: int = 10
    top: int = 10
    seed: int = 0
    cxpb: float = 0.5
    mutpb: float = 0.9
    tournsize: int = 3
    max_tries: int = 50

    def validate(self) -> "ArchSearchConfig":
        checks = [("--strategy", self.strategy in STRATEGIES, f"one of {', '.join(STRATEGIES)}"),
                  ("--samples", self.samples >= 1, "an integer >= 1"),
                  ("--pop", self.pop >= 2, "an integer >= 2"), ("--gens", self.gens >= 0, ">= 0"),
                  ("--top", self.top >= 1, "an integer >= 1")]
        check_flags(self, checks)
        return self


def random_strategy(space: str, score: Callable, constraints: Constraints, config: ArchSearchConfig,
                    rng: random.Random) -> list:
    """Score `samples` distinct uniform archs within budget."""
    return [(arch, score(arch)) for arch in sample_fitting(space, rng, constraints, config.samples)]


def ensure_arch_classes():
    """DEAP creator classes for arch individuals (dicts with a fitness), created once."""
    if not hasattr(creator, "ArchFitness"):
        creator.create("ArchFitness", base.Fitness, weights=(1.0,))
    if not hasattr(creator, "ArchIndividual"):
        creator.create("ArchIndividual", dict, fitness=creator.ArchFitness)
    return creator.ArchIndividual


def _tournament(population: list, rng: random.Random, size: int):
    return max(rng.sample(population, min(size, len(population))),
               key=lambda ind: (_order(ind.fitness.values[0]), arch_key(ind)))


def make_arch_toolbox(space: str, score: Callable, constraints: Constraints,
                      config: ArchSearchConfig, rng: random.Random) -> base.Toolbox:
    """A fresh toolbox: every operator draws from `rng` only, so a seed fixes the whole run."""
    individual = ensure_arch_classes()
    tb = base.Toolbox()
    tb.register("individual", lambda arch: individual(plain(arch)))
    tb.register("population", lambda n: [tb.individual(a) for a in
                                         sample_fitting(space, rng, constraints, n)])
    tb.register("evaluate", lambda ind: (score(plain(ind)),))
    tb.register("mutate", lambda ind: tb.individual(
        mutate_arch(space, ind, rng, constraints, config.max_tries)))
    tb.register("mate", lambda a, b: tuple(tb.individual(c) for c in crossover_archs(
        space, a, b, rng, constraints, config.max_tries)))
    tb.register("select", _tournament, rng=rng, size=config.tournsize)
    return tb


def evolve_strategy(space: str, score: Callable, constraints: Constraints, config: ArchSearchConfig,
                    rng: random.Random) -> list:
    """(mu + lambda) evolution: tournament parents, crossover and/or mutation, then the best `pop`
    distinct archs of parents and offspring survive (elitist)."""
    tb = make_arch_toolbox(space, score, constraints, config, rng)
    seen: dict = {}

    def evaluate(inds):
        for ind in inds:
            ind.fitness.values = tb.evaluate(ind)
            seen.setdefault(arch_key(ind), (plain(ind), ind.fitness.values[0]))

    population = tb.population(config.pop)
    evaluate(population)
    for _ in range(config.gens):
        offspring = []
        while len(offspring) < config.pop:
            a, b = tb.select(population), tb.select(population)
            children = tb.mate(a, b) if rng.random() < config.cxpb else (tb.individual(a), tb.individual(b))
            offspring += [tb.mutate(c) if rng.random() < config.mutpb else c for c in children]
        offspring = offspring[:config.pop]
        evaluate(offspring)
        unique = {}
        for ind in population + offspring:
            unique.setdefault(arch_key(ind), ind)
        population = sorted(unique.values(), key=lambda ind: (-_order(ind.fitness.values[0]),
                                                              arch_key(ind)))[:config.pop]
    return list(seen.values())


STRATEGIES = {"random": random_strategy, "evolve": evolve_strategy}


def search_archs(scorer: ArchScorer, constraints: Constraints, config: ArchSearchConfig) -> dict:
    """Run a strategy; the top archs by score (descending; invalid scores last, as null)."""
    config.validate()
    space = scorer.space
    constraints.check_feasible(space)
    start = time.perf_counter()
    scored = STRATEGIES[config.strategy](space, scorer, constraints, config, random.Random(config.seed))
    seconds = time.perf_counter() - start
    scored.sort(key=lambda item: (-_order(item[1]), arch_key(item[0])))
    top = []
    for arch, value in scored[:config.top]:
        params, flops = constraints.cost(space, arch)
        top.append({"arch": plain(arch), "score": value if math.isfinite(value) else None,
                    "params": int(params), "flops": int(flops)})
    return {"space": space, "proxy": scorer.proxy.name, "strategy": config.strategy,
            "seed": config.seed, "seconds": round(seconds, 3), "dataset": scorer.dataset,
            "max_params": constraints.max_params, "max_flops": constraints.max_flops,
            "evaluated": len(scored), "top": top}


# ---------------------------------------------------------------- within the bench

def within_bench(setup, proxy, split: str = "test", aggregate: str = "sum") -> dict:
    """Pick the proxy's top-1 arch of the bench split, per data set: its true accuracy, its
    percentile among the split (100 = best; share of the other archs it matches or beats) and
    the best accuracy there, i.e. what a search restricted to trained archs would have found."""
    bench = setup.bench
    indices = bench.split(split, setup.cfg.seed)
    scores = proxy_scores(setup, [proxy], indices, aggregate)[proxy.name]
    report = {"space": bench.space, "proxy": proxy.name, "split": split, "n": len(indices),
              "datasets": {}}
    for dataset in setup.datasets:
        column = column_for(dataset, setup.acc, bench.space)
        acc, values = bench.accuracies(indices, column), np.asarray(scores[column], dtype=float)
        known = [a for a in acc if a is not None]
        candidates = [i for i, a in enumerate(acc) if a is not None and math.isfinite(values[i])]
        if not candidates:
            report["datasets"][dataset] = None
            continue
        pick = max(candidates, key=lambda i: (values[i], -i))
        beaten = sum(a <= acc[pick] for a in known) - 1
        report["datasets"][dataset] = {
            "column": column, "top1_index": indices[pick], "top1_arch": bench.records[indices[pick]]["arch"],
            "top1_score": float(values[pick]), "top1_acc": acc[pick],
            "percentile": 100.0 * beaten / (len(known) - 1) if len(known) > 1 else 100.0,
            "best_acc": max(known)}
    return report


def load_arch(path, space: str) -> dict:
    """A JSON arch record ({"arch": {...}} or the bare dict), validated against the space."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadInput(f"{path}: cannot be read ({exc.strerror})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: not JSON ({str(exc)[:80]})") from None
    where = str(path)
    if isinstance(data, dict) and "arch" in data:
        data, where = data["arch"], f"{path} field arch"
    return get_space(space).validate(data, where=where)


# ---------------------------------------------------------------- text tables

def arch_summary(arch: dict) -> str:
    """Scalars as written, short lists in full, per-block lists by their mean."""
    parts = []
    for key, value in arch.items():
        if not isinstance(value, list):
            parts.append(f"{key}={value}")
        elif len(value) <= 4:
            parts.append(f"{key}={','.join(str(v) for v in value)}")
        else:
            parts.append(f"{key}~{sum(value) / len(value):.2f}")
    return " ".join(parts)


def format_search_table(result: dict) -> str:
    lines = [f"{result['space']} {result['strategy']} search, proxy {result['proxy'][:60]} on "
             f"{result['dataset']}: {result['evaluated']} archs scored in {result['seconds']:.1f} s",
             f"{'rank':>4s} {'score':>12s} {'params(M)':>9s} {'GFLOPs':>7s}  arch"]
    for rank, entry in enumerate(result["top"], 1):
        score = f"{entry['score']:12.5g}" if entry["score"] is not None else f"{'invalid':>12s}"
        lines.append(f"{rank:4d} {score} {entry['params'] / 1e6:9.3f} {entry['flops'] / 1e9:7.3f}  "
                     f"{arch_summary(entry['arch'])}")
    return "\n".join(lines)


def format_within_table(report: dict) -> str:
    lines = [f"{report['space']} bench, {report['split']} split (n = {report['n']}), top-1 of "
             f"proxy {report['proxy'][:60]}",
             f"{'dataset':10s} {'top-1 acc':>9s} {'percentile':>10s} {'best acc':>8s}  arch"]
    for dataset, entry in report["datasets"].items():
        if entry is None:
            lines.append(f"{dataset:10s} {'invalid':>9s}")
            continue
        lines.append(f"{dataset:10s} {entry['top1_acc']:9.2f} {entry['percentile']:10.1f} "
                     f"{entry['best_acc']:8.2f}  {arch_summary(entry['top1_arch'])}")
    return "\n".join(lines)
