"""Typed subtree crossover: one-point crossover that swaps two subtrees of one common type (so
both children still type-check), bounded by DEAP's staticLimit so a child over `max_nodes` nodes
is replaced by a copy of its parent.

DEAP's own cxOnePoint draws the type from a `set` of type classes, whose order follows their
memory addresses: the same seed gave another child, and the large budget another answer, when
the environment or the command line changed length (of 40 seeded crossovers of one pair of trees
with three types in common, 37 gave another child once the environment grew by five
characters). Here the types come in the order they first occur in the first parent, so a seeded
search is the same on every run.
"""
from __future__ import annotations

import random

from deap import gp


def _points_by_type(tree) -> dict:
    """Return type -> the indices of the non-root nodes of that type, in order of appearance."""
    points: dict = {}
    for index, node in enumerate(tree[1:], 1):
        points.setdefault(node.ret, []).append(index)
    return points


def one_point_crossover(first, second):
    """Swap a random subtree of `first` with a random subtree of `second` of the same type, in
    place (DEAP's cxOnePoint with a fixed order of the types); trees of one node stay as they are.
    Draws from Python's global `random`."""
    if len(first) < 2 or len(second) < 2:
        return first, second
    points_first, points_second = _points_by_type(first), _points_by_type(second)
    shared = [typ for typ in points_first if typ in points_second]
    if shared:
        typ = random.choice(shared)
        span_first = first.searchSubtree(random.choice(points_first[typ]))
        span_second = second.searchSubtree(random.choice(points_second[typ]))
        first[span_first], second[span_second] = second[span_second], first[span_first]
    return first, second


def make_crossover(max_nodes: int):
    """(tree, tree) -> first child. Draws from Python's global `random` (seeded and
    checkpointed by the search); the inputs are never modified."""
    limited = gp.staticLimit(key=len, max_value=max_nodes)(one_point_crossover)

    def crossover(tree1, tree2):
        a, b = type(tree1)(list(tree1)), type(tree2)(list(tree2))
        return limited(a, b)[0]
    return crossover
