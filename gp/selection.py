"""Parent selection and survival, registered by name: the paper's sample-pool top-k, tournament,
DEAP's double tournament (parsimony pressure), and NSGA-II over (JCM, tree size).

`key` orders individuals from worse to better (default: JCM). With --parsimony it is
`parsimony_key`: JCM on a grid of --tie-tol, then the smaller tree.
"""
from __future__ import annotations

import math
import random
from functools import partial

from deap import tools

from gp.creator_setup import ensure_pareto_classes


def _key(ind):
    return ind.fitness.values[0]


def parsimony_key(ind, tie_tol: float = 0.0):
    """JCM values in one cell of width tie_tol (or exactly equal, tie_tol = 0) count as equal;
    then the smaller tree is better: differences below Kendall's sampling error should not buy
    size."""
    value = ind.fitness.values[0]
    return (math.floor(value / tie_tol) if tie_tol > 0 else value, -len(ind))


def select_pool_topk(population: list, rng: random.Random, ratio: float = 0.5, k: int = 3, key=_key):
    """Draw a pool of ratio*|P| individuals at random, keep its top k by JCM, return one of them
    at random (Auto-Prox, Algorithm 1)."""
    size = min(len(population), max(k, 1, round(ratio * len(population))))
    pool = rng.sample(population, size)
    top = sorted(pool, key=key, reverse=True)[:k]
    return rng.choice(top)


def select_tournament(population: list, rng: random.Random, tournsize: int = 3, key=_key):
    """The best of `tournsize` individuals drawn at random."""
    return max(rng.sample(population, min(tournsize, len(population))), key=key)


def select_double(population: list, rng: random.Random, tournsize: int = 3, key=_key,
                  parsimony_size: float = 1.4):
    """DEAP's selDoubleTournament: fitness tournaments of `tournsize`, then a size tournament
    between two winners (the smaller wins with probability parsimony_size / 2). Draws from the
    global `random` (seeded and checkpointed by the search)."""
    return tools.selDoubleTournament(population, 1, tournsize, parsimony_size, fitness_first=True)[0]


SELECTIONS = {"topk": select_pool_topk, "tournament": select_tournament, "double": select_double,
              "nsga2": select_tournament}  # nsga2: binary tournaments pick parents, survive_nsga2 survivors


def _two_objective(individuals: list) -> list:
    """Copies with a (JCM, size) fitness, each pointing back to its individual (`source`)."""
    Pareto = ensure_pareto_classes()
    proxies = []
    for ind in individuals:
        p = Pareto(list(ind))
        p.fitness.values = (ind.fitness.values[0], len(ind))
        p.source = ind
        proxies.append(p)
    return proxies


def survive_nsga2(individuals: list, k: int) -> list:
    """DEAP's selNSGA2 over (JCM up, tree size down): k survivors, the front first."""
    return [p.source for p in tools.selNSGA2(_two_objective(individuals), k)]


def pareto_front(individuals: list) -> list:
    """The non-dominated individuals over (JCM up, size down), by JCM descending."""
    proxies = _two_objective(individuals)
    front = tools.sortNondominated(proxies, len(proxies), first_front_only=True)[0] if proxies else []
    return sorted((p.source for p in front), key=lambda ind: (-ind.fitness.values[0], len(ind), str(ind)))


def make_selection(name: str, rng: random.Random, ratio: float, topk: int, tournsize: int, key=_key):
    fn = SELECTIONS[name]
    if fn is select_pool_topk:
        return partial(fn, rng=rng, ratio=ratio, k=topk, key=key)
    return partial(fn, rng=rng, tournsize=2 if name == "nsga2" else tournsize, key=key)
