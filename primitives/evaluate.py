"""Evaluate a primitive tree on batched inputs, with an optional memo of subtree results.

GP revisits subtrees all the time (mutation keeps most of a parent), so results are memoised by
the subtree's printed formula, which determines its value given the inputs.
"""
from __future__ import annotations

from typing import Mapping, MutableMapping, Optional

import torch
from deap import gp

from primitives.types import Scalar


def constant_values(inputs: Mapping[str, torch.Tensor]) -> dict:
    """Values of the constant terminals `one` and `eye`, shaped after the given inputs."""
    ref = next(iter(inputs.values()))
    units = ref.shape[0]
    features = next((v.shape[-1] for v in inputs.values() if v.dim() > 1), 1)
    eye = torch.eye(features, dtype=ref.dtype, device=ref.device).expand(units, features, features)
    return {"one": torch.ones(units, dtype=ref.dtype, device=ref.device), "eye": eye}


def evaluate_tree(tree: gp.PrimitiveTree, pset: gp.PrimitiveSetTyped,
                  inputs: Mapping[str, torch.Tensor],
                  memo: Optional[MutableMapping[str, torch.Tensor]] = None) -> torch.Tensor:
    """Value of `tree` for every unit; NaN/inf in the result marks a unit invalid."""
    values = dict(inputs)
    for name, value in constant_values(inputs).items():
        values.setdefault(name, value)

    local: dict = {}  # repeated subtrees within this tree are computed once, whatever their type

    def walk(index: int):
        node = tree[index]
        if isinstance(node, gp.Terminal):
            return values[node.value], index + 1
        end = tree.searchSubtree(index).stop
        key = str(gp.PrimitiveTree(tree[index:end]))
        if key in local:
            return local[key], end
        if memo is not None and key in memo:
            return memo[key], end
        args, nxt = [], index + 1
        for _ in range(node.arity):
            value, nxt = walk(nxt)
            args.append(value)
        result = pset.context[node.name](*args)
        local[key] = result
        if memo is not None:
            memo[key] = result
        return result, nxt

    with torch.no_grad():
        result, _ = walk(0)
    return result


def tree_returns_scalar(tree: gp.PrimitiveTree) -> bool:
    return tree[0].ret is Scalar
