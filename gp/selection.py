"""Parent selection: the paper's sample-pool top-k, and tournament as the alternative."""
from __future__ import annotations

import random


def _key(ind):
    return ind.fitness.values[0]


def select_pool_topk(population: list, rng: random.Random, ratio: float = 0.5, k: int = 3):
    """Draw a pool of ratio*|P| individuals at random, keep its top k by JCM, return one of them
    at random (Auto-Prox, Algorithm 1)."""
    size = min(len(population), max(k, 1, round(ratio * len(population))))
    pool = rng.sample(population, size)
    top = sorted(pool, key=_key, reverse=True)[:k]
    return rng.choice(top)


def select_tournament(population: list, rng: random.Random, tournsize: int = 3):
    """The best of `tournsize` individuals drawn at random."""
    return max(rng.sample(population, min(tournsize, len(population))), key=_key)


SELECTIONS = {"topk": select_pool_topk, "tournament": select_tournament}
