"""Training-free architecture search: find the archs of a space a proxy likes best, under a budget.

Candidates are bench-format arch dicts, so anything found here can be built, ranked or written
to JSON like a bench record. Budgets are checked on the model's true size (224 px by default)
with the analytic counts of vit_space.costs; a candidate over budget is never scored. Scores are
computed on the fly, memoised per arch, and each candidate costs only what its proxy needs
(`proxy_needs`): #params and FLOPs are counted (no model), trees over module sizes alone read a
meta-device model (no weights), only proxies that read weights build the model, and only those
that read data run the batch. Candidates' statistics stay in memory (the shared cache is read,
never written, unless keep_stats). Score ties are broken by a declared key (TIE_KEYS).
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
from deap import base, creator, gp

from vit_space.baselines import BASELINES
from vit_space.batches import make_batch
from vit_space.bench import column_for
from vit_space.cache import StatsCache
from vit_space.costs import ANALYTIC_BASELINES, arch_cost, counted_cost, meta_model  # noqa: F401
from vit_space.datasets import NUM_CLASSES
from vit_space.errors import BadInput, check_flags
from vit_space.models import build_model, transformer_blocks
from vit_space.parallel import release_freed_memory, run_parallel
from vit_space.ranking import proxy_scores
from vit_space.scoring import StatsTable
from vit_space.spaces import arch_key, get_space
from vit_space.statistics import TENSOR_FIELDS, StatsConfig, extract_stats, extract_weight_stats


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

STRUCTURE_TERMINALS = frozenset({"msa_numel", "mlp_numel", "one"})
# weights and identities of their row counts: no batch needed (eye_msa_a is sized by activations)
WEIGHT_TERMINALS = STRUCTURE_TERMINALS | {"msa_w", "mlp_w", "eye_msa_w", "eye_mlp_w"}


def proxy_needs(proxy) -> str:
    """What scoring PROXY on a new arch takes: "cost" (the analytic count), "structure" (module
    sizes of a meta-device model), "weights" (a built model) or "data" (the batch through it)."""
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
    def from_setup(cls, proxy, setup, aggregate: str = "sum", keep_stats: bool = False) -> "ArchScorer":
        """Scores on the first data set of the run's --datasets, with the run's --jobs."""
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


def score_all(score: Callable, archs: list, desc: str = "score candidates") -> list:
    """A batch of scores: through the scorer's `many` (parallel, progress) where it has one."""
    many = getattr(score, "many", None)
    return many(archs, desc) if many else [score(arch) for arch in archs]


def _order(score: float) -> float:
    return score if math.isfinite(score) else -math.inf


# Second keys that break score ties, on the (params, FLOPs) of the full-size model: the larger
# model first (#params is itself one of the better proxies on both benches); "none": arch order.
TIE_KEYS = {"params": lambda cost: -cost[0], "flops": lambda cost: -cost[1], "none": lambda cost: 0}
TIE_WORDS = {"params": "more #params first", "flops": "more FLOPs first", "none": "arch order"}


def ranking_key(space: str, constraints: "Constraints", tie_key: str = "params") -> Callable:
    """Sort key of (arch, score), best first: score, then the declared tie key, then the arch."""
    tie = TIE_KEYS[tie_key]
    return lambda arch, score: (-_order(score), tie(constraints.cost(space, arch)), arch_key(arch))


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
    tie_key: str = "params"

    def validate(self) -> "ArchSearchConfig":
        checks = [("--strategy", self.strategy in STRATEGIES, f"one of {', '.join(STRATEGIES)}"),
                  ("--samples", self.samples >= 1, "an integer >= 1"),
                  ("--pop", self.pop >= 2, "an integer >= 2"), ("--gens", self.gens >= 0, ">= 0"),
                  ("--top", self.top >= 1, "an integer >= 1"),
                  ("--tie-key", self.tie_key in TIE_KEYS, f"one of {', '.join(TIE_KEYS)}")]
        check_flags(self, checks)
        return self


def random_strategy(space: str, score: Callable, constraints: Constraints, config: ArchSearchConfig,
                    rng: random.Random) -> list:
    """Score `samples` distinct uniform archs within budget."""
    archs = sample_fitting(space, rng, constraints, config.samples)
    return list(zip(archs, score_all(score, archs)))


def ensure_arch_classes():
    """DEAP creator classes for arch individuals (dicts with a fitness), created once."""
    if not hasattr(creator, "ArchFitness"):
        creator.create("ArchFitness", base.Fitness, weights=(1.0,))
    if not hasattr(creator, "ArchIndividual"):
        creator.create("ArchIndividual", dict, fitness=creator.ArchFitness)
    return creator.ArchIndividual


def _tournament(population: list, rng: random.Random, size: int, key: Callable):
    return min(rng.sample(population, min(size, len(population))),
               key=lambda ind: key(ind, ind.fitness.values[0]))


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
    tb.register("select", _tournament, rng=rng, size=config.tournsize,
                key=ranking_key(space, constraints, config.tie_key))
    return tb


def evolve_strategy(space: str, score: Callable, constraints: Constraints, config: ArchSearchConfig,
                    rng: random.Random) -> list:
    """(mu + lambda) evolution: tournament parents, crossover and/or mutation, then the best `pop`
    distinct archs of parents and offspring survive (elitist)."""
    tb = make_arch_toolbox(space, score, constraints, config, rng)
    key = ranking_key(space, constraints, config.tie_key)
    seen: dict = {}

    def evaluate(inds, desc):
        for ind, value in zip(inds, score_all(score, [plain(ind) for ind in inds], desc)):
            ind.fitness.values = (value,)
            seen.setdefault(arch_key(ind), (plain(ind), value))

    population = tb.population(config.pop)
    evaluate(population, f"score generation 0/{config.gens}")
    for gen in range(1, config.gens + 1):
        offspring = []
        while len(offspring) < config.pop:
            a, b = tb.select(population), tb.select(population)
            children = tb.mate(a, b) if rng.random() < config.cxpb else (tb.individual(a), tb.individual(b))
            offspring += [tb.mutate(c) if rng.random() < config.mutpb else c for c in children]
        offspring = offspring[:config.pop]
        evaluate(offspring, f"score generation {gen}/{config.gens}")
        unique = {}
        for ind in population + offspring:
            unique.setdefault(arch_key(ind), ind)
        population = sorted(unique.values(), key=lambda ind: key(ind, ind.fitness.values[0]))[:config.pop]
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
    key = ranking_key(space, constraints, config.tie_key)
    scored.sort(key=lambda item: key(*item))
    best = scored[0][1] if scored else math.nan
    tied = sum(1 for _, value in scored if value == best) if math.isfinite(best) else 0
    top = []
    for arch, value in scored[:config.top]:
        params, flops = constraints.cost(space, arch)
        top.append({"arch": plain(arch), "score": value if math.isfinite(value) else None,
                    "params": int(params), "flops": int(flops)})
    return {"space": space, "proxy": scorer.proxy.name, "strategy": config.strategy,
            "seed": config.seed, "seconds": round(seconds, 3), "dataset": scorer.dataset,
            "tie_key": config.tie_key, "tied_at_top": tied,
            "max_params": constraints.max_params, "max_flops": constraints.max_flops,
            "evaluated": len(scored), "top": top}


# ---------------------------------------------------------------- within the bench

def within_bench(setup, proxy, split: str = "test", aggregate: str = "sum",
                 tie_key: str = "params") -> dict:
    """Pick the proxy's top-1 arch of the bench split, per data set: its true accuracy, its
    percentile among the split (100 = best; share of the other archs it matches or beats) and
    the best accuracy there, i.e. what a search restricted to trained archs would have found.
    Score ties are broken as the search breaks them (`tie_key` on the 224 px model)."""
    if tie_key not in TIE_KEYS:
        raise BadInput(f"--tie-key {tie_key}: expected one of {', '.join(TIE_KEYS)}")
    bench = setup.bench
    indices = bench.split(split, setup.split_seed)
    scores = proxy_scores(setup, [proxy], indices, aggregate)[proxy.name]
    report = {"space": bench.space, "proxy": proxy.name, "split": split, "n": len(indices),
              "tie_key": tie_key, "datasets": {}}
    for dataset in setup.datasets:
        column = column_for(dataset, setup.acc, bench.space)
        acc, values = bench.accuracies(indices, column), np.asarray(scores[column], dtype=float)
        known = [a for a in acc if a is not None]
        candidates = [i for i, a in enumerate(acc) if a is not None and math.isfinite(values[i])]
        if not candidates:
            report["datasets"][dataset] = None
            continue
        key = ranking_key(bench.space, Constraints(num_classes=NUM_CLASSES[dataset]), tie_key)
        pick = min(candidates, key=lambda i: key(bench.records[indices[i]]["arch"], values[i])[:2] + (i,))
        tied = sum(1 for i in candidates if values[i] == values[pick])
        beaten = sum(a <= acc[pick] for a in known) - 1
        report["datasets"][dataset] = {
            "column": column, "top1_index": indices[pick], "top1_arch": bench.records[indices[pick]]["arch"],
            "top1_score": float(values[pick]), "top1_acc": acc[pick], "tied_at_top": tied,
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
             f"ties broken by --tie-key {result['tie_key']} ({TIE_WORDS[result['tie_key']]}); "
             f"{result['tied_at_top']} scored arch(s) share the top score",
             f"{'rank':>4s} {'score':>12s} {'params(M)':>9s} {'GFLOPs':>7s}  arch"]
    for rank, entry in enumerate(result["top"], 1):
        score = f"{entry['score']:12.5g}" if entry["score"] is not None else f"{'invalid':>12s}"
        lines.append(f"{rank:4d} {score} {entry['params'] / 1e6:9.3f} {entry['flops'] / 1e9:7.3f}  "
                     f"{arch_summary(entry['arch'])}")
    return "\n".join(lines)


def format_within_table(report: dict) -> str:
    lines = [f"{report['space']} bench, {report['split']} split (n = {report['n']}), top-1 of "
             f"proxy {report['proxy'][:60]}, ties broken by --tie-key {report['tie_key']}",
             f"{'dataset':10s} {'top-1 acc':>9s} {'percentile':>10s} {'best acc':>8s} {'tied':>4s}  arch"]
    for dataset, entry in report["datasets"].items():
        if entry is None:
            lines.append(f"{dataset:10s} {'invalid':>9s}")
            continue
        lines.append(f"{dataset:10s} {entry['top1_acc']:9.2f} {entry['percentile']:10.1f} "
                     f"{entry['best_acc']:8.2f} {entry['tied_at_top']:4d}  {arch_summary(entry['top1_arch'])}")
    return "\n".join(lines)
