"""Mutations on typed trees. Every one returns a new tree of the same root type.

`mutate_nodes` is the paper's: each node, independently with probability p, is replaced by a
random primitive of the same signature (return and argument types, so its subtrees still fit)
or, for a terminal, by a random terminal of the same type. The others wrap DEAP's own
mutations, which draw from Python's global `random` (the search seeds and checkpoints it too).
"""
from __future__ import annotations

import random
from functools import partial

from deap import gp

from primitives import generate_tree


def _same_signature(pset, node):
    if isinstance(node, gp.Terminal):
        return [t for t in pset.terminals[node.ret] if isinstance(t, gp.Terminal)]
    return [p for p in pset.primitives[node.ret] if p.args == node.args]


def mutate_nodes(tree, pset, rng: random.Random, p_node: float = 0.5):
    """Node-wise mutation: each node replaced with probability p_node by a same-typed one."""
    child = type(tree)(list(tree))
    for i, node in enumerate(child):
        if rng.random() < p_node:
            options = [o for o in _same_signature(pset, node) if o is not node] or [node]
            child[i] = rng.choice(options)
    return child


def _subtree_generator(pset, rng, min_depth=0, max_depth=2):
    def expr(pset=pset, type_=None):
        return list(generate_tree(pset, min_depth, max_depth, rng, type_))
    return expr


def mutate_uniform(tree, pset, rng: random.Random, max_depth: int = 2):
    """DEAP's mutUniform: a random subtree replaced by a fresh random one of the same type."""
    child = type(tree)(list(tree))
    return gp.mutUniform(child, expr=_subtree_generator(pset, rng, 0, max_depth), pset=pset)[0]


def mutate_shrink(tree, pset, rng: random.Random):
    """DEAP's mutShrink: a primitive replaced by one of its same-typed arguments."""
    return gp.mutShrink(type(tree)(list(tree)))[0]


def mutate_insert(tree, pset, rng: random.Random):
    """DEAP's mutInsert: a new primitive inserted above a random node."""
    return gp.mutInsert(type(tree)(list(tree)), pset=pset)[0]


MUTATIONS = {"node": mutate_nodes, "uniform": mutate_uniform, "shrink": mutate_shrink,
             "insert": mutate_insert}


def make_mutation(name: str, pset, rng: random.Random, p_node: float = 0.5):
    fn = MUTATIONS[name]
    if name == "node":
        return partial(fn, pset=pset, rng=rng, p_node=p_node)
    return partial(fn, pset=pset, rng=rng)
