"""Statistics of many (arch, dataset) items stacked per block-shape group, as numpy arrays.

Blocks of every item with the same shapes are stacked so that a tree is a few batched ops per
group (vit_space.scoring.table). Groups come in order of first appearance and blocks within a group in
item order, so the stacking, and every sum over it, is the same however the items were read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from vit_space.stats.statistics import SCALAR_FIELDS, TENSOR_FIELDS

FIELDS = TENSOR_FIELDS + SCALAR_FIELDS


@dataclass
class Stacked:
    """`groups`: per block-shape group, {field: array with one row per block, "owner": the item
    index of each block (int64)}; `n_items`: how many items were stacked."""
    groups: list
    n_items: int

    def nbytes(self) -> int:
        return sum(a.nbytes for g in self.groups for a in g.values())


def signature(block: dict) -> tuple:
    return tuple(np.shape(block[f]) for f in TENSOR_FIELDS)


def stack_items(items: Iterable[dict]) -> Stacked:
    """One pass over `items` (a generator is fine): every block is kept until its field is stacked,
    then freed field by field, so the peak is about the items' size plus one field's stack."""
    grouped: dict = {}
    index = -1
    for index, stats in enumerate(items):
        for block in stats["blocks"]:
            group = grouped.setdefault(signature(block), {"owner": [], **{f: [] for f in FIELDS}})
            group["owner"].append(index)
            for f in FIELDS:
                group[f].append(block[f])
    groups = []
    for group in grouped.values():
        out = {f: np.stack(group.pop(f)) for f in TENSOR_FIELDS}
        out.update({f: np.asarray(group[f], dtype=np.float32) for f in SCALAR_FIELDS})
        out["owner"] = np.asarray(group["owner"], dtype=np.int64)
        groups.append(out)
    return Stacked(groups, index + 1)


def stack_in_place(n_items: int, shapes: Callable[[int], list], load: Callable[[int], dict]) -> Stacked:
    """Two passes: `shapes(i)` gives item i's block signatures (cheap: no arrays read), then each
    `load(i)` is copied into preallocated arrays and dropped. Only one item is held at a time, so
    the peak is the stack itself."""
    signatures = [list(shapes(i)) for i in range(n_items)]
    layout: dict = {}
    for i, sigs in enumerate(signatures):
        for sig in sigs:
            layout.setdefault(sig, []).append(i)
    groups, slots = {}, {}
    for sig, owners in layout.items():
        group = {f: np.empty((len(owners), *shape), np.float32) for f, shape in zip(TENSOR_FIELDS, sig)}
        group.update({f: np.empty(len(owners), np.float32) for f in SCALAR_FIELDS})
        group["owner"] = np.asarray(owners, dtype=np.int64)
        groups[sig], slots[sig] = group, 0
    for i in range(n_items):
        blocks = load(i)["blocks"]
        if [signature(b) for b in blocks] != signatures[i]:
            raise ValueError(f"item {i}: its blocks changed shape between the two passes")
        for block in blocks:
            sig = signature(block)
            group, row = groups[sig], slots[sig]
            for f in FIELDS:
                group[f][row] = block[f]
            slots[sig] = row + 1
    return Stacked(list(groups.values()), n_items)
