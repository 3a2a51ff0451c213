"""Evaluate a primitive tree on batched inputs, with an optional memo of subtree results.

GP revisits subtrees all the time (mutation keeps most of a parent), so results are memoised by
the subtree's printed formula, which determines its value given the inputs.
"""
from __future__ import annotations

from collections import Counter
from types import MappingProxyType
from typing import Mapping, MutableMapping, Optional

import torch
from deap import gp



def constant_values(pset: gp.PrimitiveSetTyped, inputs: Mapping[str, torch.Tensor],
                    names: Optional[set] = None) -> dict:
    """Values of the constant terminals (those in `names` only, when given): `one`, and each
    `eye_<name>` sized by the rows of the terminal it is named after."""
    ref = next(iter(inputs.values()))
    units = ref.shape[0]
    out = {}
    if names is None or "one" in names:
        out["one"] = torch.ones(units, dtype=ref.dtype, device=ref.device)
    for eye, source in getattr(pset, "eye_sources", {}).items():
        if names is not None and eye not in names:
            continue
        value = inputs[source]
        rows = 1
        for size in value.shape[1:-1]:
            rows *= size
        out[eye] = torch.eye(rows, dtype=value.dtype, device=value.device).expand(units, rows, rows)
    return out


def subtree_keys(tree: gp.PrimitiveTree) -> tuple:
    """Per primitive node of `tree`: its subtree's formula (the memo key) and where the subtree
    ends. They depend on the tree alone, so a caller that evaluates one tree on many chunks of
    units computes them once (printing subtrees costs more than the ops on a small chunk)."""
    keys, ends = {}, {}
    for index, node in enumerate(tree):
        if not isinstance(node, gp.Terminal):
            ends[index] = tree.searchSubtree(index).stop
            keys[index] = str(gp.PrimitiveTree(tree[index:ends[index]]))
    return keys, ends


def identity_operands(tree: gp.PrimitiveTree, pset: gp.PrimitiveSetTyped) -> dict:
    """{index of a node: the input it is} for each op of `tree` marked
    `identity_keeps_safe_operand` (matmul) whose first argument is an `eye_*` constant and
    whose second is an input: such a node is that input, if the input is `identity_safe` (the
    caller checks, and hands `evaluate_tree` the nodes that pass)."""
    eyes, out = getattr(pset, "eye_sources", {}), {}
    for index, node in enumerate(tree[:-2]):
        first, second = tree[index + 1], tree[index + 2]
        if (not isinstance(node, gp.Terminal)
                and getattr(pset.context[node.name], "identity_keeps_safe_operand", False)
                and isinstance(first, gp.Terminal) and first.value in eyes
                and isinstance(second, gp.Terminal) and second.value not in eyes):
            out[index] = second.value
    return out


def evaluate_tree(tree: gp.PrimitiveTree, pset: gp.PrimitiveSetTyped,
                  inputs: Mapping[str, torch.Tensor],
                  memo: Optional[MutableMapping[str, torch.Tensor]] = None,
                  keys: Optional[tuple] = None,
                  passed: Mapping[int, str] = MappingProxyType({}),
                  in_place: bool = True) -> torch.Tensor:
    """Value of `tree` for every unit; NaN/inf in the result marks a unit invalid. `keys`:
    `subtree_keys(tree)`, when the caller has it already. `passed`: nodes of
    `identity_operands(tree, pset)` whose input the caller found `ops.identity_safe`; each is
    taken as that input itself (the same bits, without a pass over it). Both depend on the tree
    and the inputs alone, so a caller that evaluates one tree on many chunks finds them once.
    `in_place`: an op marked `takes_own` may write its result over an argument that only it
    reads (an intermediate no other node, the memo or the caller holds), with the same values;
    the inputs are never written. A memo with a `keeps(value)` method says which results it
    stores; the rest stay the evaluator's own (without it, the memo is taken to keep them all)."""
    values = dict(inputs)
    # only the constants the tree reads: a chunked evaluation makes them once per chunk
    wanted = {node.value for node in tree if isinstance(node, gp.Terminal)} - values.keys()
    values.update(constant_values(pset, inputs, wanted))

    keys, ends = keys or subtree_keys(tree)
    counts = Counter(keys.values())
    units = next(iter(inputs.values())).shape[0]
    local: dict = {}  # subtrees that occur twice or more in this tree are computed once
    memo_keeps = getattr(memo, "keeps", lambda value: memo is not None)

    def walk(index: int):
        """(value, where the subtree ends, whether the value is this evaluation's alone)."""
        node = tree[index]
        if isinstance(node, gp.Terminal):
            return values[node.value], index + 1, False
        end = ends[index]
        if index in passed:
            return values[passed[index]], end, False
        key = keys[index]
        if key in local:
            return local[key], end, False
        if memo is not None and key in memo:
            return memo[key], end, False
        fn, args, owned, nxt = pset.context[node.name], [], [], index + 1
        shape_only = getattr(fn, "shape_only", False)  # e.g. numel: its argument's shape, not its values
        for _ in range(node.arity):
            if shape_only:
                end_of_arg = ends.get(nxt, nxt + 1)  # a terminal ends one node later
                value, nxt = _first_unit_expanded(tree[nxt:end_of_arg], pset, values, units), end_of_arg
                mine = False
            else:
                value, nxt, mine = walk(nxt)
            args.append(value)
            owned.append(mine)
        result = _apply(fn, args, owned if in_place else ())
        if counts[key] > 1:
            local[key] = result
        if memo is not None:
            memo[key] = result
        held = counts[key] > 1 or memo_keeps(result)
        return result, nxt, not (held or _shares_memory(result, args))

    with torch.no_grad():
        result, _, _ = walk(0)
    return result


def _shares_memory(result: torch.Tensor, args: list) -> bool:
    """Whether `result` lies in an argument's memory: an op that returns its input (or a view
    of it) hands over nothing of its own, so nothing may be written there (0.2 us a check)."""
    mine = result.untyped_storage().data_ptr()
    return any(arg.untyped_storage().data_ptr() == mine for arg in args)


def _apply(fn, args: list, owned) -> torch.Tensor:
    """fn(*args), written over the first argument where it is owned and fn takes that (or
    over the second, the arguments swapped, where fn is commutative)."""
    if owned and getattr(fn, "takes_own", False):
        if owned[0]:
            return fn(*args, own=True)
        if len(args) == 2 and owned[1] and getattr(fn, "commutative", False):
            return fn(args[1], args[0], own=True)
    return fn(*args)


def _first_unit_expanded(nodes: list, pset, values: dict, units: int) -> torch.Tensor:
    """The subtree `nodes` computed on the first unit only and expanded (a view) to `units`:
    what an op that reads only its argument's shape needs, since every op acts within one unit
    and all units of a group share their shapes."""
    first = {name: value[:1] for name, value in values.items()}
    value = evaluate_tree(gp.PrimitiveTree(nodes), pset, first)
    return value.expand(units, *value.shape[1:])
