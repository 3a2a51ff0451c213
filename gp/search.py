"""The Auto-Prox search loop (Algorithm 1) on a DEAP toolbox.

`make_toolbox` registers every operator by name (generate, select, mutate, evaluate, vary), so an
ablation is one `toolbox.register(...)` away. `run_search` is a steady-state loop: select a parent,
vary it (elitism-preserve), add the child, drop the worst. It checkpoints every few iterations and
when interrupted; a resumed run replays exactly what the uninterrupted run would have done.

Defaults follow the paper: population 20, 200 iterations, node mutation p = 0.5, margin m = 0.1.
The paper leaves the pool ratio r and k open: we use r = 0.5 (a pool of 10 of 20) and k = 3, so
the parent is one of the three best of a random half: selective, yet not always the champion.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from deap import base
from tqdm.auto import tqdm

from gp.checkpoint import load_checkpoint, rng_state_from_json, rng_state_to_json, save_checkpoint
from gp.creator_setup import as_individual
from gp.elitism import elitism_preserve
from gp.mutation import MUTATIONS, make_mutation
from gp.selection import SELECTIONS
from primitives import generate_tree, parse_formula
from vit_space.errors import BadInput, check_flags


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

    def validate(self) -> "SearchConfig":
        checks = [("--pop", self.pop >= 2, "an integer >= 2"), ("--iters", self.iters >= 0, ">= 0"),
                  ("--ratio", 0 < self.ratio <= 1, "in (0, 1]"), ("--topk", self.topk >= 1, ">= 1"),
                  ("--p-node", 0 <= self.p_node <= 1, "in [0, 1]"), ("--margin", self.margin >= 0, ">= 0"),
                  ("--max-tries", self.max_tries >= 1, ">= 1"),
                  ("--tournsize", self.tournsize >= 1, ">= 1"),
                  ("--max-nodes", self.max_nodes >= 2, ">= 2 (a bare terminal is never a proxy)"),
                  ("--select", self.select in SELECTIONS, f"one of {', '.join(SELECTIONS)}"),
                  ("--mutate", self.mutate in MUTATIONS, f"one of {', '.join(MUTATIONS)}")]
        check_flags(self, checks)
        return self


def make_toolbox(pset, fitness: Callable, config: SearchConfig, rng: random.Random) -> base.Toolbox:
    """A fresh toolbox (no globals), each operator registered under its role's name."""
    tb = base.Toolbox()
    tb.pset, tb.rng = pset, rng  # for operators registered later (ablations, custom ops)
    tb.register("generate", lambda: as_individual(
        generate_tree(pset, config.init_min_depth, config.init_max_depth, rng)))
    tb.register("evaluate", fitness)
    select = SELECTIONS[config.select]
    if config.select == "topk":
        tb.register("select", select, rng=rng, ratio=config.ratio, k=config.topk)
    else:
        tb.register("select", select, rng=rng, tournsize=config.tournsize)
    mutate = make_mutation(config.mutate, pset, rng, config.p_node)
    tb.register("mutate", lambda tree: as_individual(mutate(tree)))
    tb.register("vary", lambda parent, existing=frozenset(): elitism_preserve(
        parent, tb, config.margin, config.max_tries, config.elitism, existing))
    return tb


@dataclass
class SearchState:
    population: list
    iteration: int = 0
    history: list = field(default_factory=list)
    rejects: dict = field(default_factory=dict)
    rng: tuple = ()  # (search rng state, global random state) at this state's commit


def _rng_states(rng: random.Random) -> tuple:
    return rng.getstate(), random.getstate()


def initial_population(toolbox, size: int, max_attempts: int) -> tuple:
    population, seen, rejects = [], set(), {}
    for _ in range(max_attempts):
        ind = toolbox.generate()
        key = str(ind)
        if key in seen:
            continue
        seen.add(key)
        value, reason = toolbox.evaluate(ind)
        if reason:
            rejects[reason] = rejects.get(reason, 0) + 1
            continue
        ind.fitness.values = (value,)
        population.append(ind)
        if len(population) == size:
            return population, rejects
    raise RuntimeError(f"only {len(population)} of {size} random proxies were valid after "
                       f"{max_attempts} attempts; check the statistics (e.g. --archs too small)")


def _record(state: SearchState, offspring=None) -> dict:
    values = [ind.fitness.values[0] for ind in state.population]
    best = max(state.population, key=lambda ind: ind.fitness.values[0])
    return {"iter": state.iteration, "best": max(values), "mean": sum(values) / len(values),
            "tries": offspring.tries if offspring else 0,
            "rejects": sum(offspring.rejects.values()) if offspring else 0,
            "met_margin": offspring.met_margin if offspring else None,
            "best_formula": str(best)}


def best_individual(population):
    return max(population, key=lambda ind: (ind.fitness.values[0], -len(ind), str(ind)))


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

    def __init__(self, toolbox, pset, config: SearchConfig, rng: random.Random, memo: dict,
                 checkpoint_path: Optional[Path] = None, identity: Optional[dict] = None):
        self.toolbox, self.pset, self.config, self.rng, self.memo = toolbox, pset, config, rng, memo
        self.checkpoint_path = checkpoint_path
        self.identity = identity or {"search": asdict(config)}
        self.state: Optional[SearchState] = None

    # -- checkpoints --------------------------------------------------------------------------
    def save(self):
        if self.checkpoint_path is None or self.state is None:
            return
        s = self.state
        save_checkpoint(self.checkpoint_path, {
            "identity": self.identity, "iteration": s.iteration,
            "population": [[str(ind), ind.fitness.values[0]] for ind in s.population],
            "history": s.history, "rejects": s.rejects,
            "rng": rng_state_to_json(s.rng[0]),
            "global_random": rng_state_to_json(s.rng[1]),
            "memo": [[k, v[0], v[1]] for k, v in self.memo.items()],
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
        self.memo.update({k: (v, r) for k, v, r in data["memo"]})
        self.rng.setstate(rng_state_from_json(data["rng"]))
        random.setstate(rng_state_from_json(data["global_random"]))
        self.state = SearchState(population, data["iteration"], data["history"], data["rejects"],
                                 _rng_states(self.rng))

    # -- the loop -----------------------------------------------------------------------------
    def start(self):
        random.seed(self.config.seed)
        self.rng.seed(self.config.seed)
        population, rejects = initial_population(self.toolbox, self.config.pop, 200 * self.config.pop)
        state = SearchState(population, 0, [], rejects, _rng_states(self.rng))
        state.history.append(_record(state))
        self.state = state
        self.save()

    def step(self):
        """One iteration, committed by a single assignment: an interrupt mid-step leaves the
        previous state (with its RNG states) intact, so saving it then is still exact."""
        s = self.state
        parent = self.toolbox.select(s.population)
        offspring = self.toolbox.vary(parent, {str(ind) for ind in s.population})
        rejects = dict(s.rejects)
        for reason, n in offspring.rejects.items():
            rejects[reason] = rejects.get(reason, 0) + n
        population = list(s.population)
        if offspring.child is not None:
            population.append(offspring.child)
            population.remove(min(population, key=lambda ind: ind.fitness.values[0]))
        new = SearchState(population, s.iteration + 1, s.history, rejects, _rng_states(self.rng))
        new.history = s.history + [_record(new, offspring)]
        self.state = new

    def run(self, resume: bool = False, progress: bool = True,
            stop_after: Optional[int] = None) -> SearchState:
        """Run to config.iters (or `stop_after` more iterations, for tests of interruption)."""
        if resume and self.checkpoint_path is not None and self.checkpoint_path.exists():
            self.restore()
        elif resume:
            raise BadInput(f"--resume: no checkpoint at {self.checkpoint_path}")
        else:
            self.start()
        bar = tqdm(total=self.config.iters, initial=self.state.iteration, desc="evolve",
                   disable=not progress, unit="iter")
        done = 0
        try:
            while self.state.iteration < self.config.iters and (stop_after is None or done < stop_after):
                self.step()
                done += 1
                bar.update(1)
                bar.set_postfix(best=f"{self.state.history[-1]['best']:.4f}")
                if self.state.iteration % self.config.checkpoint_every == 0:
                    self.save()
        finally:
            bar.close()
            self.save()
        return self.state
