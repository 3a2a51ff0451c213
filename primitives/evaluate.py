"""Evaluate a primitive tree on batched inputs, with an optional memo of subtree results.

GP revisits subtrees all the time (mutation keeps most of a parent), so results are memoised by
the subtree's printed formula, which determines its value given the inputs.
"""
from __future__ import annotations

from collections import Counter
from typing import Mapping, MutableMapping, Optional

import torch
from deap import gp



def constant_values(pset: gp.PrimitiveSetTyped, inputs: Mapping[str, torch.Tensor]) -> dict:
    """Values of the constant terminals: `one`, and each `eye_<name>` sized by the rows of the
    terminal it is named after."""
    ref = next(iter(inputs.values()))
    units = ref.shape[0]
    out = {"one": torch.ones(units, dtype=ref.dtype, device=ref.device)}
    for eye, source in getattr(pset, "eye_sources", {}).items():
        value = inputs[source]
        rows = 1
        for size in value.shape[1:-1]:
            rows *= size
        out[eye] = torch.eye(rows, dtype=value.dtype, device=value.device).expand(units, rows, rows)
    return out


def evaluate_tree(tree: gp.PrimitiveTree, pset: gp.PrimitiveSetTyped,
                  inputs: Mapping[str, torch.Tensor],
                  memo: Optional[MutableMapping[str, torch.Tensor]] = None) -> torch.Tensor:
    """Value of `tree` for every unit; NaN/inf in the result marks a unit invalid."""
    values = dict(inputs)
    for name, value in constant_values(pset, inputs).items():
        values.setdefault(name, value)

    keys = {}
    for index, node in enumerate(tree):
        if not isinstance(node, gp.Terminal):
            keys[index] = str(gp.PrimitiveTree(tree[index:tree.searchSubtree(index).stop]))
    counts = Counter(keys.values())
    local: dict = {}  # subtrees that occur twice or more in this tree are computed once

    def walk(index: int):
        node = tree[index]
        if isinstance(node, gp.Terminal):
            return values[node.value], index + 1
        end = tree.searchSubtree(index).stop
        key = keys[index]
        if key in local:
            return local[key], end
        if memo is not None and key in memo:
            return memo[key], end
        args, nxt = [], index + 1
        for _ in range(node.arity):
            value, nxt = walk(nxt)
            args.append(value)
        result = pset.context[node.name](*args)
        if counts[key] > 1:
            local[key] = result
        if memo is not None:
            memo[key] = result
        return result, nxt

    with torch.no_grad():
        result, _ = walk(0)
    return result
