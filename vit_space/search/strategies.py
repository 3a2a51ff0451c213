"""Search strategies over a space's archs (uniform sampling, DEAP evolution) and their ranking.

Score ties are broken by a declared key (TIE_KEYS), so a structural proxy that scores many
archs alike still gives a reproducible answer.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Callable

from deap import base, creator

from vit_space.core.errors import check_flags
from vit_space.data.spaces import arch_key
from vit_space.search.candidates import ArchScorer, score_all
from vit_space.search.constraints import Constraints, crossover_archs, mutate_arch, sample_fitting
from vit_space.search.genes import plain

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
