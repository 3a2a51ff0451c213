"""Elitism-preserve (Auto-Prox, Algorithm 1): mutate the parent until the child's JCM is within
margin m of the parent's, so a step never loses much of what the parent had found.

Retries are bounded by `max_tries`. Fallback when no child meets the margin: the best valid child
seen joins the population anyway (it is then the first candidate for removal); when none of the
tries was valid at all, the iteration adds nothing. With elitism off, the first valid child joins.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class Offspring:
    child: Optional[object]
    tries: int
    rejects: dict
    met_margin: bool


def elitism_preserve(parent, toolbox, margin: float = 0.1, max_tries: int = 10,
                     elitism: bool = True, existing=frozenset(), phenotypes=frozenset(),
                     mates=()) -> Offspring:
    """Uses toolbox.breed ((parent, mates) -> tree: a mutation, or a crossover with a mate),
    toolbox.evaluate (tree -> (jcm, reason)) and toolbox.phenotype. A child whose formula is
    already in the population (`existing`) is rejected as a duplicate, one whose phenotype is
    (`phenotypes`: it ranks the search archs exactly as a member does) as "phenotype": copies
    would crowd out the population's diversity without adding anything."""
    target = parent.fitness.values[0] - margin
    best, rejects = None, {}
    for tries in range(1, max_tries + 1):
        child = toolbox.breed(parent, mates)
        value, reason = (None, "duplicate") if str(child) in existing else toolbox.evaluate(child)
        if not reason and phenotypes and toolbox.phenotype(child) in phenotypes:
            reason = "phenotype"
        if reason:
            rejects[reason] = rejects.get(reason, 0) + 1
            continue
        child.fitness.values = (value,)
        if not elitism or value >= target:
            return Offspring(child, tries, rejects, True)
        if best is None or value > best.fitness.values[0]:
            best = child
    return Offspring(best, max_tries, rejects, False)
