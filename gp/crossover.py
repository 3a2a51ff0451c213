"""Typed subtree crossover: DEAP's cxOnePoint (type-aware on a typed primitive set: it swaps two
subtrees of one common type, so both children still type-check), bounded by DEAP's staticLimit so
a child over `max_nodes` nodes is replaced by a copy of its parent."""
from __future__ import annotations


from deap import gp


def make_crossover(max_nodes: int):
    """(tree, tree) -> first child. Draws from Python's global `random` (seeded and
    checkpointed by the search); the inputs are never modified."""
    limited = gp.staticLimit(key=len, max_value=max_nodes)(gp.cxOnePoint)

    def crossover(tree1, tree2):
        a, b = type(tree1)(list(tree1)), type(tree2)(list(tree2))
        return limited(a, b)[0]
    return crossover
