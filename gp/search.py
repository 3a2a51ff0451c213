"""The Auto-Prox search loop (Algorithm 1) on a DEAP toolbox.

`make_toolbox` registers every operator by name (generate, select, mutate, evaluate, vary), so an
ablation is one `toolbox.register(...)` away. `run_search` is a steady-state loop: select a parent,
vary it (elitism-preserve), add the child, drop the worst. It checkpoints every few iterations and
when interrupted; a resumed run replays exactly what the uninterrupted run would have done.

Defaults follow the paper: population 20, 200 iterations, node mutation p = 0.5, margin m = 0.1.
The paper leaves the pool ratio r and k open: we use r = 0.5 (a pool of 10 of 20) and k = 3, so
the parent is one of the three best of a random half: selective, yet not always the champion.

Two other strategies share the loop, its checkpoints and its result files: `select="nsga2"` runs
generations (P children evaluated as one batch through toolbox.map, survivors by NSGA-II over
JCM and tree size), and `strategy="random"` draws batches of random trees from the initial
population's generator until `evals` evaluations, keeping the best P distinct phenotypes.
"""
from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from deap import base
from tqdm.auto import tqdm

from gp.crossover import make_crossover

from gp.checkpoint import load_checkpoint, rng_state_from_json, rng_state_to_json, save_checkpoint
from gp.creator_setup import as_individual
from gp.elitism import elitism_preserve
from gp.fitness import MemoFitness
from gp.mutation import MUTATIONS, make_mutation
from gp.selection import SELECTIONS, make_selection, parsimony_key, survive_nsga2
from primitives import generate_tree, parse_formula
from vit_space.core.errors import BadInput, check_flags


@dataclass
class SearchConfig:
    pop: int = 20
    iters: int = 200
    ratio: float = 0.5
    topk: int = 3
    select: str = "topk"
    tournsize: int = 3
    mutate: str = "node"
    p_node: float = 0.5
    elitism: bool = True
    margin: float = 0.1
    max_tries: int = 10
    init_min_depth: int = 2
    init_max_depth: int = 5
    max_nodes: int = 60
    seed: int = 0
    checkpoint_every: int = 10
    strategy: str = "evolve"  # evolve | random
    cxpb: float = 0.0  # probability that a child is a crossover of the parent and a second parent
    parsimony: bool = False  # JCM within tie_tol: the smaller tree wins (selection, removal)
    tie_tol: float = 0.0
    evals: int = 0  # stop after this many distinct evaluated trees (0: iterations only)
    patience: int = 1000  # stop once this many iterations in a row evaluated no new tree (0: never)
    unique_phenotypes: bool = True  # reject a child that ranks the search archs as a member does
    hof: int = 10  # hall of fame: best distinct phenotypes, the candidates of the final choice
    folds: int = 5  # k of the cross-validated JCM inside the search split
    choose: str = "best"  # best: Algorithm 1's best JCM | cv: best mean - 1 s.e. over folds
    # | ensemble: the rank-average of the hall of fame's `ensemble` best (gp.choice)
    ensemble: int = 5
    with_params: bool = False  # --choose ensemble: #params (of the blocks) joins as a member
    bags: int = 5  # --choose bagged: searches on bootstrap resamples of the search archs (gp.bagging)

    def validate(self) -> "SearchConfig":
        checks = [("--pop", self.pop >= 2, "an integer >= 2"), ("--iters", self.iters >= 0, ">= 0"),
                  ("--ratio", 0 < self.ratio <= 1, "in (0, 1]"), ("--topk", self.topk >= 1, ">= 1"),
                  ("--p-node", 0 <= self.p_node <= 1, "in [0, 1]"), ("--margin", self.margin >= 0, ">= 0"),
                  ("--max-tries", self.max_tries >= 1, ">= 1"),
                  ("--tournsize", self.tournsize >= 1, ">= 1"),
                  ("--max-nodes", self.max_nodes >= 2, ">= 2 (a bare terminal is never a proxy)"),
                  ("--select", self.select in SELECTIONS, f"one of {', '.join(SELECTIONS)}"),
                  ("--mutate", self.mutate in MUTATIONS, f"one of {', '.join(MUTATIONS)}"),
                  ("--strategy", self.strategy in STRATEGIES, f"one of {', '.join(STRATEGIES)}"),
                  ("--cxpb", 0 <= self.cxpb <= 1, "in [0, 1]"), ("--tie-tol", self.tie_tol >= 0, ">= 0"),
                  ("--evals", self.evals >= (self.pop if self.strategy == "random" else 0),
                   ">= --pop with --strategy random (it needs a budget), else >= 0"),
                  ("--patience", self.patience >= 0, ">= 0"), ("--hof", self.hof >= 1, ">= 1"),
                  ("--folds", self.folds >= 2, ">= 2"),
                  ("--choose", self.choose in CHOICES, f"one of {', '.join(CHOICES)}"),
                  ("--ensemble", 1 <= self.ensemble <= self.hof, "in [1, --hof]"),
                  ("--bags", self.bags >= 1, ">= 1")]
        check_flags(self, checks)
        return self


STRATEGIES = ("evolve", "random")
CHOICES = ("best", "cv", "ensemble", "bagged")


def _fitness_key(ind):
    return ind.fitness.values[0]


def sequential_map(fn, items) -> list:
    return [fn(x) for x in items]


def joblib_map(n_jobs: int):
    """A toolbox map over threads: the evaluator's stacked tensors are shared, not copied into
    processes, and torch releases the GIL while it computes. Results keep the input order."""
    from joblib import Parallel, delayed

    def map_(fn, items) -> list:
        return Parallel(n_jobs=n_jobs, backend="threading")(delayed(fn)(x) for x in items)
    return map_


def make_toolbox(pset, fitness: Callable, config: SearchConfig, rng: random.Random,
                 n_jobs: int = 1) -> base.Toolbox:
    """A fresh toolbox (no globals), each operator registered under its role's name."""
    tb = base.Toolbox()
    tb.pset, tb.rng = pset, rng  # for operators registered later (ablations, custom ops)
    tb.register("generate", lambda: as_individual(
        generate_tree(pset, config.init_min_depth, config.init_max_depth, rng)))
    tb.register("evaluate", fitness)
    tb.register("phenotype", getattr(fitness, "phenotype", lambda tree: None))
    tb.register("map", joblib_map(n_jobs) if n_jobs > 1 else sequential_map)
    tb.key = (lambda ind: parsimony_key(ind, config.tie_tol)) if config.parsimony else _fitness_key
    tb.register("select", make_selection(config.select, rng, config.ratio, config.topk,
                                         config.tournsize, tb.key))
    mutate = make_mutation(config.mutate, pset, rng, config.p_node)
    tb.register("mutate", lambda tree: as_individual(mutate(tree)))
    tb.register("mate", make_crossover(config.max_nodes))

    def breed(parent, mates=()):
        """Crossover with a second selected parent with probability cxpb, else a mutation (no
        draw at all when cxpb = 0, so the paper preset's random stream is Algorithm 1's)."""
        if config.cxpb > 0 and len(mates) > 1 and rng.random() < config.cxpb:
            return as_individual(tb.mate(parent, tb.select(mates)))
        return tb.mutate(parent)
    tb.register("breed", breed)
    tb.register("vary", lambda parent, existing=frozenset(), phenotypes=frozenset(), mates=():
                elitism_preserve(parent, tb, config.margin, config.max_tries, config.elitism,
                                 existing, phenotypes, mates))
    tb.register("survive", survive_nsga2)
    return tb


def new_search(evaluator, pset, config: SearchConfig, checkpoint_path: Optional[Path] = None,
               identity: Optional[dict] = None, n_jobs: int = 1, toolbox_hook=None) -> "Search":
    """A Search whose fitness is JCM under `evaluator` (memoised), on a fresh toolbox;
    `toolbox_hook(toolbox)` may re-register operators (ablations) before it runs."""
    fitness = MemoFitness(evaluator, config.max_nodes)
    rng = random.Random(config.seed)
    toolbox = make_toolbox(pset, fitness, config, rng, n_jobs=n_jobs)
    if toolbox_hook:
        toolbox_hook(toolbox)
    return Search(toolbox, pset, config, rng, fitness, checkpoint_path, identity)


@dataclass
class SearchState:
    population: list
    iteration: int = 0
    history: list = field(default_factory=list)
    rejects: dict = field(default_factory=dict)
    rng: tuple = ()  # (search rng state, global random state) at this state's commit


def _rng_states(rng: random.Random) -> tuple:
    return rng.getstate(), random.getstate()


def _count(rejects: dict, reason: str, n: int = 1) -> None:
    rejects[reason] = rejects.get(reason, 0) + n


def _admit(toolbox, ind, result: tuple, seen: set, unique: bool, rejects: dict) -> bool:
    """Whether an evaluated `ind` (result: (jcm, reject reason)) may join: valid and, with
    `unique`, of a phenotype not in `seen`. If so its fitness is set and its phenotype added to
    `seen`; if not the reason is counted in `rejects`."""
    value, reason = result
    phenotype = None if reason else toolbox.phenotype(ind)
    if not reason and unique and phenotype is not None and phenotype in seen:
        reason = "phenotype"
    if reason:
        _count(rejects, reason)
        return False
    seen.add(phenotype)
    ind.fitness.values = (value,)
    return True


def initial_population(toolbox, size: int, max_attempts: int, unique_phenotypes: bool = True) -> tuple:
    population, seen, phenotypes, rejects = [], set(), set(), {}
    for _ in range(max_attempts):
        ind = toolbox.generate()
        key = str(ind)
        if key in seen:
            continue
        seen.add(key)
        if not _admit(toolbox, ind, toolbox.evaluate(ind), phenotypes, unique_phenotypes, rejects):
            continue
        population.append(ind)
        if len(population) == size:
            return population, rejects
    raise RuntimeError(f"only {len(population)} of {size} random proxies were valid after "
                       f"{max_attempts} attempts; check the statistics (e.g. --archs too small)")


def best_individual(population):
    """Algorithm 1's answer: the highest JCM; among equal JCMs the smaller tree, then the formula
    (the one rule of best.json and of history.json's best_formula)."""
    return max(population, key=lambda ind: (ind.fitness.values[0], -len(ind), str(ind)))


def _record(state: SearchState, toolbox, evaluations: int, tries: int = 0, rejects: int = 0,
            met_margin=None) -> dict:
    values = [ind.fitness.values[0] for ind in state.population]
    phenotypes = {toolbox.phenotype(ind) or str(ind) for ind in state.population}
    return {"iter": state.iteration, "best": max(values), "mean": sum(values) / len(values),
            "tries": tries, "rejects": rejects, "met_margin": met_margin,
            "phenotypes": len(phenotypes), "evaluations": evaluations,
            "best_formula": str(best_individual(state.population))}


def _differing(old: dict, new: dict, prefix: str = "") -> list:
    """Dotted names of the settings that differ between two identities (e.g. search.margin)."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differing(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(prefix + k)
    return out


class Search:
    """A resumable run of Algorithm 1. `memo` is the fitness callable's memo (saved with it)."""

    def __init__(self, toolbox, pset, config: SearchConfig, rng: random.Random, fitness,
                 checkpoint_path: Optional[Path] = None, identity: Optional[dict] = None):
        self.toolbox, self.pset, self.config, self.rng = toolbox, pset, config, rng
        self.fitness, self.memo = fitness, fitness.memo
        self.phenotypes = getattr(fitness, "phenotypes", {})
        self.checkpoint_path = checkpoint_path
        self.identity = identity or {"search": asdict(config)}
        self.state: Optional[SearchState] = None
        self.seconds_before = 0.0  # wall seconds of earlier runs of this search (from the checkpoint)
        self._run_started: Optional[float] = None

    @property
    def seconds(self) -> float:
        """Wall seconds spent on this search over all its runs, so a resumed search reports
        what the whole search cost and not only its last part."""
        now = 0.0 if self._run_started is None else time.perf_counter() - self._run_started
        return self.seconds_before + now

    # -- checkpoints --------------------------------------------------------------------------
    def save(self):
        if self.checkpoint_path is None or self.state is None:
            return
        s = self.state
        save_checkpoint(self.checkpoint_path, {
            "identity": self.identity, "iteration": s.iteration,
            "population": [[str(ind), ind.fitness.values[0]] for ind in s.population],
            "history": s.history, "rejects": s.rejects, "seconds": round(self.seconds, 2),
            "rng": rng_state_to_json(s.rng[0]),
            "global_random": rng_state_to_json(s.rng[1]),
            "memo": [[k, v[0], v[1], self.phenotypes.get(k)] for k, v in self.memo.items()],
        })

    @staticmethod
    def load_resumable(checkpoint_path: Path, identity: dict) -> dict:
        """The checkpoint's payload; BadInput when it is missing, damaged or of another run."""
        data = load_checkpoint(checkpoint_path)
        if data["identity"] != identity:
            diff = _differing(data["identity"], identity)
            raise BadInput(f"--resume: {checkpoint_path} was made with a different "
                           f"configuration ({', '.join(diff)} differ); use a new --out")
        return data

    def restore(self):
        data = self.load_resumable(self.checkpoint_path, self.identity)
        population = []
        for formula, value in data["population"]:
            ind = as_individual(parse_formula(formula, self.pset))
            ind.fitness.values = (value,)
            population.append(ind)
        self.memo.update({k: (v, r) for k, v, r, _ in data["memo"]})
        self.phenotypes.update({k: ph for k, _, _, ph in data["memo"] if ph is not None})
        self.seconds_before = data.get("seconds", 0.0)  # absent in checkpoints of older builds
        self.rng.setstate(rng_state_from_json(data["rng"]))
        random.setstate(rng_state_from_json(data["global_random"]))
        self.state = SearchState(population, data["iteration"], data["history"], data["rejects"],
                                 _rng_states(self.rng))

    # -- the loop -----------------------------------------------------------------------------
    def start(self):
        random.seed(self.config.seed)
        self.rng.seed(self.config.seed)
        population, rejects = initial_population(self.toolbox, self.config.pop, 200 * self.config.pop,
                                                 self.config.unique_phenotypes)
        state = SearchState(population, 0, [], rejects, _rng_states(self.rng))
        state.history.append(_record(state, self.toolbox, len(self.memo)))
        self.state = state
        self.save()

    def _member_phenotypes(self, population) -> set:
        if not self.config.unique_phenotypes:
            return set()
        return {ph for ph in (self.toolbox.phenotype(ind) for ind in population) if ph is not None}

    def _commit(self, population, rejects: dict, batch_rejects: dict, **record):
        """Commit one iteration by a single assignment: an interrupt mid-step leaves the previous
        state (with its RNG states) intact, so saving it then is still exact."""
        s = self.state
        new = SearchState(population, s.iteration + 1, s.history, rejects, _rng_states(self.rng))
        new.history = s.history + [_record(new, self.toolbox, len(self.memo),
                                           rejects=sum(batch_rejects.values()), **record)]
        self.state = new

    def _merged_rejects(self, batch: dict) -> dict:
        rejects = dict(self.state.rejects)
        for reason, n in batch.items():
            _count(rejects, reason, n)
        return rejects

    def step(self):
        """One iteration of the configured strategy."""
        if self.config.strategy == "random":
            return self._random_batch()
        if self.config.select == "nsga2":
            return self._generation()
        s, tb = self.state, self.toolbox
        parent = tb.select(s.population)
        offspring = tb.vary(parent, {str(ind) for ind in s.population},
                            self._member_phenotypes(s.population), s.population)
        population = list(s.population)
        if offspring.child is not None:
            population.append(offspring.child)
            population.remove(min(population, key=tb.key))
        self._commit(population, self._merged_rejects(offspring.rejects), offspring.rejects,
                     tries=offspring.tries, met_margin=offspring.met_margin)

    def _evaluate_batch(self, children: list, population: list, rejects: dict) -> list:
        """Evaluate `children` through toolbox.map; the valid ones whose phenotype is new to
        `population` and to each other, with their fitness set."""
        results = self.toolbox.map(self.toolbox.evaluate, children)
        seen = self._member_phenotypes(population)
        return [child for child, result in zip(children, results)
                if _admit(self.toolbox, child, result, seen, self.config.unique_phenotypes, rejects)]

    def _generation(self):
        """NSGA-II: P children (binary tournaments, crossover or mutation) evaluated as one
        batch, then P survivors of parents + children by non-domination and crowding."""
        s, tb = self.state, self.toolbox
        formulas, children, batch_rejects = {str(ind) for ind in s.population}, [], {}
        for _ in range(self.config.pop):
            child = tb.breed(tb.select(s.population), s.population)
            if str(child) in formulas:
                _count(batch_rejects, "duplicate")
                continue
            formulas.add(str(child))
            children.append(child)
        valid = self._evaluate_batch(children, s.population, batch_rejects)
        population = tb.survive(list(s.population) + valid, self.config.pop)
        self._commit(population, self._merged_rejects(batch_rejects), batch_rejects,
                     tries=self.config.pop)

    def _random_batch(self):
        """Random search: up to P new random trees (never more than the evaluations left),
        evaluated as one batch; the population keeps the best P distinct phenotypes seen."""
        s, tb = self.state, self.toolbox
        need = min(self.config.pop, self.config.evals - len(self.memo))
        batch, formulas = [], set()
        for _ in range(200 * need):
            if len(batch) == need:
                break
            tree = tb.generate()
            if str(tree) not in self.memo and str(tree) not in formulas:
                formulas.add(str(tree))
                batch.append(tree)
        batch_rejects = {}
        valid = self._evaluate_batch(batch, s.population, batch_rejects)
        population = sorted(list(s.population) + valid, key=tb.key, reverse=True)[:self.config.pop]
        self._commit(population, self._merged_rejects(batch_rejects), batch_rejects,
                     tries=len(batch))

    def stop_reason(self) -> Optional[str]:
        """Why the search is over (None while it is not): "evaluations" (the budget of distinct
        trees is spent), "iterations", "exhausted" (random search: the generator finds nothing
        new) or "patience" (evolution: the last `patience` iterations evaluated no new tree, i.e.
        every child was a tree seen before; without this a converged population would spin
        through the remaining iterations of a budget set by evaluations)."""
        c, history = self.config, self.state.history
        if c.evals and len(self.memo) >= c.evals:
            return "evaluations"
        if c.strategy == "random":
            return "exhausted" if history[-1]["tries"] == 0 and self.state.iteration > 0 else None
        if self.state.iteration >= c.iters:
            return "iterations"
        if c.patience and len(history) > c.patience and \
                history[-1]["evaluations"] == history[-1 - c.patience]["evaluations"]:
            return "patience"
        return None

    @property
    def finished(self) -> bool:
        return self.stop_reason() is not None

    def run(self, resume: bool = False, progress: bool = True,
            stop_after: Optional[int] = None) -> SearchState:
        """Run to config.iters or config.evals (or `stop_after` more iterations, for tests
        of interruption)."""
        self._run_started = time.perf_counter()
        if resume and self.checkpoint_path is not None and self.checkpoint_path.exists():
            self.restore()
        elif resume:
            raise BadInput(f"--resume: no checkpoint at {self.checkpoint_path}")
        else:
            self.start()
        by_evals = bool(self.config.evals)
        bar = tqdm(total=self.config.evals if by_evals else self.config.iters,
                   initial=len(self.memo) if by_evals else self.state.iteration,
                   desc=self.config.strategy, disable=not progress,
                   unit="eval" if by_evals else "iter")
        done = 0
        try:
            while not self.finished and (stop_after is None or done < stop_after):
                self.step()
                done += 1
                bar.update(min(len(self.memo), bar.total) - bar.n if by_evals else 1)
                bar.set_postfix(best=f"{self.state.history[-1]['best']:.4f}")
                if self.state.iteration % self.config.checkpoint_every == 0:
                    self.save()
        finally:
            bar.close()
            self.save()
        return self.state
