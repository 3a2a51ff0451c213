"""Score a proxy tree on the cached statistics of many (arch, dataset) items at once.

Blocks of every item are grouped by shape and stacked, so one tree evaluation is a handful of
batched torch ops per shape group rather than a Python loop over archs and blocks. Per-block
results are summed (or averaged) into one score per item. Block aggregation is fixed by the
run's configuration; how a block's MSA and MLP statistics combine is what the tree evolves.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from primitives import Scalar, evaluate_tree
from vit_space.core.malloc import release_freed_memory
from vit_space.stats.stacking import Stacked, stack_items
from vit_space.stats.statistics import SCALAR_FIELDS, TENSOR_FIELDS
from vit_space.stats.terminals import vit_primitive_set

AGGREGATIONS = ("sum", "mean")
# a tree's temporaries are tensors as large as the stacked statistics, of sizes that change from
# tree to tree: malloc's heap fragments and, untrimmed, grew by ~2 GB per 160 trees (1 thread)
# (150 random trees, one thread: trim after 0.5 GiB 2.16 GB peak, 50.0 s; after 1.5 GiB 3.09 GB,
# 47.8 s; never 4.26 GB and growing, 39.7 s): every trim is paid back in page faults
TRIM_AFTER_GROWTH = 2**30


class ScalarMemo(OrderedDict):
    """LRU memo that keeps only per-block scalar results: they are tiny, while tensor-valued
    subtrees would cost as much memory as the statistics themselves."""

    def __init__(self, max_entries: int = 20000):
        super().__init__()
        self.max_entries = max_entries

    def __contains__(self, key):
        if super().__contains__(key):
            self.move_to_end(key)
            return True
        return False

    def __setitem__(self, key, value):
        if value.dim() != 1:  # a tensor-valued subtree: not kept
            return
        super().__setitem__(key, value)
        if len(self) > self.max_entries:
            self.popitem(last=False)


class StatsTable:
    """Statistics of `items` (a list of per-item stats dicts, or a `Stacked` of them) as torch
    tensors per block-shape group. On the CPU the tensors share the stacked arrays' memory."""

    def __init__(self, items, device: str = "cpu", aggregate: str = "sum",
                 memo_entries: int = 20000):
        if aggregate not in AGGREGATIONS:
            raise ValueError(f"aggregate: {aggregate!r} (expected one of {AGGREGATIONS})")
        self.device, self.aggregate = device, aggregate
        stacked = items if isinstance(items, Stacked) else stack_items(items)
        self.n_items = stacked.n_items
        self.groups = []
        for group in stacked.groups:
            inputs = {f: torch.from_numpy(group[f]).to(device) for f in TENSOR_FIELDS + SCALAR_FIELDS}
            self.groups.append((inputs, torch.from_numpy(group["owner"]).to(device)))
        counts = torch.zeros(self.n_items, dtype=torch.float64, device=device)
        for _, owner in self.groups:
            counts.index_add_(0, owner, torch.ones(len(owner), dtype=torch.float64, device=device))
        self.block_counts = counts
        self.memos = [ScalarMemo(memo_entries) for _ in self.groups]

    def scores(self, tree, pset=None) -> np.ndarray:
        """One float64 score per item; NaN marks an item on which the tree is invalid."""
        pset = pset or vit_primitive_set()
        if tree[0].ret is not Scalar:
            raise ValueError(f"tree {tree} does not return a per-block Scalar")
        total = torch.zeros(self.n_items, dtype=torch.float64, device=self.device)
        for (inputs, owner), memo in zip(self.groups, self.memos):
            values = evaluate_tree(tree, pset, inputs, memo).to(torch.float64)
            total.index_add_(0, owner, values)
        if self.aggregate == "mean":
            total = total / self.block_counts
        out = total.cpu().numpy()
        out[~np.isfinite(out)] = np.nan
        release_freed_memory(grown=TRIM_AFTER_GROWTH)
        return out

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for inputs, _ in self.groups for t in inputs.values())
