"""Random typed trees that never dead-end.

DEAP's generators need a terminal of every type at the depth limit; ours prefers terminals there
and otherwise picks the primitive whose arguments all have terminals, and takes an explicit
`random.Random`, so a search's randomness is one checkpointable object.
"""
from __future__ import annotations

import random

from deap import gp


def _terminals(pset, typ):
    return [t for t in pset.terminals.get(typ, []) if isinstance(t, gp.Terminal)]


def _closing(pset, typ):
    """Primitives of return type `typ` whose arguments can all be terminals."""
    return [p for p in pset.primitives.get(typ, []) if all(_terminals(pset, a) for a in p.args)]


def generate_tree(pset: gp.PrimitiveSetTyped, min_depth: int, max_depth: int,
                  rng: random.Random, type_=None) -> gp.PrimitiveTree:
    """A 'grow' tree of depth within [min_depth, max_depth] (at most max_depth + 1 when a type has
    no terminal at the limit), rooted at `type_` (default: the set's return type)."""
    nodes: list = []

    def grow(typ, depth):
        terms, prims = _terminals(pset, typ), pset.primitives.get(typ, [])
        at_limit = depth >= max_depth
        want_terminal = terms and (at_limit or (depth >= min_depth and
                                                rng.random() < len(terms) / (len(terms) + len(prims))))
        if want_terminal or not prims:
            nodes.append(rng.choice(terms))
            return
        choices = _closing(pset, typ) if at_limit else prims
        prim = rng.choice(choices or prims)
        nodes.append(prim)
        for arg in prim.args:
            grow(arg, depth + 1)

    grow(type_ or pset.ret, 0)
    return gp.PrimitiveTree(nodes)
