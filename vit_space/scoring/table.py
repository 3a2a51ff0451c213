"""Score a proxy tree on the cached statistics of many (arch, dataset) items at once.

Blocks of every item are grouped by shape and stacked, so one tree evaluation is a handful of
batched torch ops per shape group rather than a Python loop over archs and blocks. Per-block
results are summed (or averaged) into one score per item. Block aggregation is fixed by the
run's configuration; how a block's MSA and MLP statistics combine is what the tree evolves.
"""
from __future__ import annotations

import copy
import contextlib
import os
import threading
import warnings
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Optional

import numpy as np
import torch
from deap import gp

from primitives import Scalar, evaluate_tree
from primitives.evaluate import identity_operands, subtree_keys
from primitives.ops import identity_safe
from primitives.rewrite import simplify
from vit_space.core.malloc import release_freed_memory
from vit_space.scoring.distinct import find_distinct_units
from vit_space.scoring.unit_processes import UnitProcesses, fork_available, share_out
from vit_space.stats.stacking import Stacked, stack_items
from vit_space.stats.statistics import SCALAR_FIELDS, TENSOR_FIELDS
from vit_space.stats.terminals import vit_primitive_set

AGGREGATIONS = ("sum", "mean")
# a tree's temporaries are tensors as large as the stacked statistics, of sizes that change from
# tree to tree: malloc's heap fragments and, untrimmed, grew by ~2 GB per 160 trees (1 thread)
# (150 random trees, one thread: trim after 0.5 GiB 2.16 GB peak, 50.0 s; after 1.5 GiB 3.09 GB,
# 47.8 s; never 4.26 GB and growing, 39.7 s): every trim is paid back in page faults
# (chunked evaluation keeps temporaries small: 150 trees stay flat at 1.52 GB untrimmed, so this
# only acts on whole-group evaluation)
TRIM_AFTER_GROWTH = 2**30
# On the CPU with one torch thread a group is evaluated a chunk of units at a time, a chunk of the
# group's largest terminal being about this many bytes: the tree's temporaries then stay in the
# L3 (32 MiB) instead of each being written to memory and read back. Smaller chunks pay a fixed
# ~30 us per op and chunk (180 default search items, 1 thread, 30 random trees, CPU per tree:
# whole groups 172 ms; 64 KiB 565; 512 KiB 210; 1 MiB 184; 2 MiB 169; 4 MiB 164; 16 MiB 164).
# With more threads every op of every chunk is an OpenMP parallel region, and beside other jobs
# (OpenMP's threads spin at each region's end) 4 MiB chunks took 2.5x the CPU of whole groups
# (2 threads: 879 against 354 ms; idle too: 1.17x the wall time of whole groups on a warm run's
# 422 trees): so several threads do not share a chunk's ops, each takes chunks of its own (below).
CHUNK_BYTES = 2**22
# With several torch threads on the CPU, the chunks of every group are shared out among as many
# worker threads, each running torch on one thread: every op of a chunk is then serial and stays
# in its core's cache, and no op waits at an OpenMP barrier for its partner thread (whole groups
# on two OpenMP threads spend part of their CPU spinning at the end of each op's parallel region).
# The default run's 489 trees: 0.91x the wall time of whole groups, the same bits.
# On Linux the chunks are shared out among forked helper processes instead (unit_processes), which
# do not wait on each other for the GIL: 0.89x the wall time of two worker threads, the same bits.


class ScalarMemo(OrderedDict):
    """LRU memo that keeps only per-block scalar results: they are tiny, while tensor-valued
    subtrees would cost as much memory as the statistics themselves."""

    @staticmethod
    def keeps(value: torch.Tensor) -> bool:
        """Whether a result is stored: per-unit scalars only (what an evaluation writes over
        must be something no memo keeps, `evaluate_tree`)."""
        return value.dim() == 1

    def __init__(self, max_entries: int = 20000):
        super().__init__()
        self.max_entries = max_entries

    def __contains__(self, key):
        if super().__contains__(key):
            self.move_to_end(key)
            return True
        return False

    def __setitem__(self, key, value):
        if not self.keeps(value):  # a tensor-valued subtree
            return
        super().__setitem__(key, value)
        if len(self) > self.max_entries:
            self.popitem(last=False)


class ChunkMemo:
    """A group's memo as one chunk of its units sees it: a hit is the group's vector sliced to
    the chunk, and new scalar results are kept aside (`made`) and stored whole, by
    `join_chunks`, once every chunk is done, so that the group memo only ever holds whole-group
    vectors (and is only read while chunks run, on any thread)."""

    keeps = staticmethod(ScalarMemo.keeps)

    def __init__(self, memo: ScalarMemo, part: slice):
        self.memo, self.part, self.made, self.hits = memo, part, {}, {}

    def __contains__(self, key):  # asked once per node: the LRU is touched once
        if key not in self.hits:
            self.hits[key] = key in self.memo
        return self.hits[key]

    def __getitem__(self, key):
        return self.memo[key][self.part]

    def __setitem__(self, key, value):
        if self.keeps(value):
            self.made[key] = value


def names_read(tree, pset) -> set:
    """The names of the statistics `tree` reads: its terminals and those that size its `eye_*`
    constants."""
    names = {node.value for node in tree if isinstance(node, gp.Terminal)}
    eyes = getattr(pset, "eye_sources", {})
    return names | {eyes[name] for name in names if name in eyes}


def fields_read(tree, pset, inputs: dict) -> list:
    """The statistics `tree` reads (slicing all ten per chunk costs as much as a small tree's
    ops)."""
    names = names_read(tree, pset)
    return [f for f in inputs if f in names] or list(inputs)[:1]  # `one` alone: any sets the units


def _chunk_slices(inputs: dict, units: int) -> list:
    """Slices of `units` units that cover a group."""
    n = len(next(iter(inputs.values())))
    return [slice(start, start + units) for start in range(0, n, units)]


def _evaluate_part(tree, pset, inputs: dict, fields: list, memo: ScalarMemo, part: slice, keys,
                   passed: dict, origin: int = 0):
    """One chunk of a group: its per-unit values and the scalar results it made (`memo`'s
    vectors start at unit `origin` of the group)."""
    view = ChunkMemo(memo, slice(part.start - origin, part.stop - origin))
    values = evaluate_tree(tree, pset, {field: inputs[field][part] for field in fields}, view, keys,
                           passed)
    return values, view.made


def evaluate_share(tree, pset, groups: list, shares: list, memos: list, origins: list, keys,
                   passed: list) -> list:
    """Per group, [(values, made)] of each chunk in `shares[g]` (a run of its chunks), in order:
    `memos[g]` holds vectors that start at unit `origins[g]` (0 for a whole-group memo; a
    helper process holds its run's part alone)."""
    out = []
    for (inputs, _), parts, memo, origin, nodes in zip(groups, shares, memos, origins, passed):
        fields = fields_read(tree, pset, inputs)  # once per group, not per chunk
        out.append([_evaluate_part(tree, pset, inputs, fields, memo, part, keys, nodes, origin)
                    for part in parts])
    return out


def join_chunks(memo: ScalarMemo, parts: list) -> torch.Tensor:
    """A group's values from its chunks' (values, made), in order; the scalar results that every
    chunk made (every chunk walks the same path: all of them) go to the memo as whole vectors."""
    for key in parts[0][1]:
        if all(key in made for _, made in parts):
            memo[key] = torch.cat([made[key] for _, made in parts])
    return torch.cat([values for values, _ in parts])


def evaluate_chunked(tree, pset, inputs: dict, memo: ScalarMemo, units: int, keys: tuple,
                     passed: Optional[dict] = None):
    """`evaluate_tree` on `units` units at a time, the per-unit results concatenated. Every op
    acts within a unit, so the values are those of one call on the whole group, while each
    temporary is a chunk's size and stays in cache. (A linear-algebra reduction that raises marks
    its chunk invalid rather than the whole group: ops._finite_or_nan.)"""
    parts, passed = _chunk_slices(inputs, units), passed or {}
    if len(parts) == 1:
        return evaluate_tree(tree, pset, inputs, memo, keys, passed)
    fields = fields_read(tree, pset, inputs)
    return join_chunks(memo, [_evaluate_part(tree, pset, inputs, fields, memo, part, keys, passed)
                              for part in parts])


def _one_torch_thread(ready: threading.Barrier) -> None:
    """A worker's initialiser: torch on one thread in this thread (OpenMP's thread count is
    per thread; torch's global default, which the same call sets, is put back by `_workers`
    once every worker has passed the barrier)."""
    torch.get_num_threads()  # torch's lazy per-thread set-up first, or it would undo the next line
    torch.set_num_threads(1)
    ready.wait()


@lru_cache(maxsize=None)
def _workers(count: int) -> ThreadPoolExecutor:
    """`count` threads that each run torch on one thread, started at once."""
    threads = torch.get_num_threads()
    ready = threading.Barrier(count + 1)
    pool = ThreadPoolExecutor(count, thread_name_prefix="scoring-units",
                              initializer=_one_torch_thread, initargs=(ready,))
    for _ in range(count):  # every submit meets no idle thread yet, so each starts one
        pool.submit(int)
    ready.wait()
    torch.set_num_threads(threads)  # torch's default for threads started later, as before
    return pool


# a forked child inherits the pool but not its threads (see primitives.ops._pool)
os.register_at_fork(after_in_child=_workers.cache_clear)


def evaluate_parallel(tree, pset, groups: list, memos: list, units: list, keys: tuple,
                      workers: int, passed: list) -> list:
    """`evaluate_chunked` for every group at once, the chunks of all groups handed to `workers`
    threads (one torch thread each) as they come free: the same per-unit values, one tensor per
    group, and the same memo entries, stored once every chunk is done."""
    pool, jobs = _workers(workers), []
    for (inputs, _), memo, size, nodes in zip(groups, memos, units, passed):
        fields = fields_read(tree, pset, inputs)
        jobs.append([pool.submit(_evaluate_part, tree, pset, inputs, fields, memo, part, keys, nodes)
                     for part in _chunk_slices(inputs, size)])
    return [join_chunks(memo, [job.result() for job in group]) for memo, group in zip(memos, jobs)]


@contextlib.contextmanager
def one_torch_thread():
    """Torch on one thread in this thread for a while (its share of chunks runs serially,
    as a worker's does), then as before."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class StatsTable:
    """Statistics of `items` (a list of per-item stats dicts, or a `Stacked` of them) as torch
    tensors per block-shape group. On the CPU the tensors share the stacked arrays' memory.
    `chunk_units`: units per chunk of a tree evaluation; None = automatic (`CHUNK_BYTES` on the
    CPU; whole groups on CUDA, where one large kernel per op beats many small launches, and on
    the CPU with several torch threads and one worker). `workers`: how many share the chunks out,
    each running torch on one thread; None = automatic (torch's thread count on the CPU, one on
    CUDA). `processes`: whether they are this process and forked helpers, each with a GIL of its
    own, rather than threads; None = where fork exists (Linux). `close()` ends the helpers.
    `simplify`: drop the ops that `primitives.rewrite` proves change nothing before evaluating
    (the same scores bit for bit; False evaluates every op as written). `distinct_units`: a tree
    that reads only statistics repeated across items (an arch's weights, the same with every
    data set) runs once per distinct unit, on a copy of those units (`distinct`; the same
    scores bit for bit; False evaluates every unit)."""

    def __init__(self, items, device: str = "cpu", aggregate: str = "sum",
                 memo_entries: int = 20000, chunk_units: Optional[int] = None,
                 workers: Optional[int] = None, processes: Optional[bool] = None,
                 simplify: bool = True, distinct_units: bool = True):
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
        self.identity_safe = [{} for _ in self.groups]  # per group, statistic -> ops.identity_safe
        if chunk_units is not None and chunk_units < 1:
            raise ValueError(f"chunk_units: {chunk_units!r} (expected None or an integer >= 1)")
        if workers is not None and workers < 1:
            raise ValueError(f"workers: {workers!r} (expected None or an integer >= 1)")
        if processes and not fork_available():
            raise ValueError("processes=True: this platform has no fork (expected None or False)")
        self.chunk_units, self.workers, self.processes = chunk_units, workers, processes
        self.simplify = simplify
        self.distinct_units = distinct_units
        self._distinct = None  # DistinctUnits (or False: none), found on first need
        self._on_distinct = None  # the StatsTable of the distinct units, made on first need
        self._made_lock = threading.Lock()  # guards the two above
        self._helpers = None  # UnitProcesses, forked on first need
        self._helper_lock = threading.Lock()  # one tree at a time through the helpers' pipes

    def scores(self, tree, pset=None) -> np.ndarray:
        """One float64 score per item; NaN marks an item on which the tree is invalid."""
        pset = pset or vit_primitive_set()
        if tree[0].ret is not Scalar:
            raise ValueError(f"tree {tree} does not return a per-block Scalar")
        if self.simplify:  # before the memo keys: a rewritten subtree shares its entries
            tree = simplify(tree, pset)
        table = self.table_for(tree, pset)
        per_group = table._unit_values(tree, pset)
        if table is not self:  # one value per distinct unit: copied out to every unit
            per_group = [values[inverse] for values, inverse in zip(per_group, self._distinct.inverse)]
        total = torch.zeros(self.n_items, dtype=torch.float64, device=self.device)
        for (_, owner), values in zip(self.groups, per_group):
            total.index_add_(0, owner, values.to(torch.float64))
        if self.aggregate == "mean":
            total = total / self.block_counts
        out = total.cpu().numpy()
        out[~np.isfinite(out)] = np.nan
        release_freed_memory(grown=TRIM_AFTER_GROWTH)
        return out

    def table_for(self, tree, pset) -> "StatsTable":
        """The table that evaluates `tree`: where every statistic it reads repeats across items,
        one that holds each distinct unit once (made on first need), else this one."""
        if not self.distinct_units:
            return self
        with self._made_lock:  # a toolbox map on threads may call in at once
            if self._distinct is None:
                self._distinct = find_distinct_units(self.groups) or False
            if not self._distinct:
                return self
            statistics = names_read(tree, pset) & self.groups[0][0].keys()  # not the constants
            if not statistics <= self._distinct.fields:
                return self
            if self._on_distinct is None:
                self._on_distinct = self._distinct_table()
            return self._on_distinct

    def clear_memos(self) -> None:
        """Forget every memoised result (to time real evaluations)."""
        for memo in self.memos:
            memo.clear()
        if self._on_distinct is not None:
            self._on_distinct.clear_memos()

    def _distinct_table(self) -> "StatsTable":
        """This table's settings on a copy of the repeated statistics' distinct units, with
        memos and helper processes of its own."""
        other = self.variant(self.chunk_units, self.workers, self.processes)
        other.groups = [({f: x.index_select(0, first) for f, x in inputs.items()
                          if f in self._distinct.fields}, owner.index_select(0, first))
                        for (inputs, owner), first in zip(self.groups, self._distinct.first)]
        other.identity_safe = [{} for _ in other.groups]
        other.distinct_units = False
        return other

    def _unit_values(self, tree, pset) -> list:
        """Per group, `tree`'s value for every unit (`tree` simplified already)."""
        keys, workers = subtree_keys(tree), self.worker_count()
        units = [self.units_per_chunk(inputs) for inputs, _ in self.groups]
        passed = self.passed_nodes(tree, pset)
        per_group = None
        if workers > 1 and self.uses_processes():
            with self._helper_lock:  # a toolbox map on threads may call in at once
                per_group = self._evaluate_forked(tree, pset, units, keys, workers, passed)
        if per_group is None and workers > 1:
            per_group = evaluate_parallel(tree, pset, self.groups, self.memos, units, keys, workers,
                                          passed)
        if per_group is None:
            per_group = [evaluate_chunked(tree, pset, inputs, memo, size, keys, nodes)
                         for (inputs, _), memo, size, nodes
                         in zip(self.groups, self.memos, units, passed)]
        return per_group

    def _on_cpu(self) -> bool:
        ref = next(iter(self.groups[0][0].values())) if self.groups else None
        return ref is not None and ref.device.type == "cpu"

    def uses_processes(self) -> bool:
        """The explicit `processes`; else whether fork exists, on the CPU."""
        return self.processes is not False and self._on_cpu() and fork_available()

    def _evaluate_forked(self, tree, pset, units: list, keys: tuple, workers: int,
                         passed: list) -> list:
        """`evaluate_parallel`'s values and memo entries, each group's chunks shared out in
        consecutive runs: the first run here (torch on one thread), one run per helper (None
        where the helpers cannot take `tree`)."""
        shares = [share_out(_chunk_slices(inputs, size), workers)
                  for (inputs, _), size in zip(self.groups, units)]
        mine = [group[0] for group in shares]
        theirs = [[group[k] for group in shares] for k in range(1, workers)]
        helpers = self._helpers_for(pset, theirs)
        if not helpers.knows(tree):
            return None  # a node the helpers cannot look up: worker threads take the tree
        origins, own = [0] * len(self.groups), None  # the memo holds whole groups
        try:
            helpers.send(tree, keys, passed, self.memos)
            with one_torch_thread():
                own = evaluate_share(tree, pset, self.groups, mine, self.memos, origins, keys, passed)
            answers = helpers.receive()
        except (EOFError, OSError) as error:  # a helper died: all runs are done here instead
            warnings.warn(f"scoring helper process lost ({type(error).__name__}); this table "
                          f"evaluates on threads from now on", RuntimeWarning)
            self.close()
            self.processes = False
            with one_torch_thread():
                if own is None:  # the helper was lost before this process's run was done
                    own = evaluate_share(tree, pset, self.groups, mine, self.memos, origins, keys,
                                         passed)
                answers = [evaluate_share(tree, pset, self.groups, share, self.memos, origins,
                                          keys, passed) for share in theirs]
        except BaseException:  # interrupted mid-tree: a late answer must not meet the next tree
            self.close()
            raise
        return [join_chunks(memo, own[g] + [part for answer in answers for part in answer[g]])
                for g, memo in enumerate(self.memos)]

    def _helpers_for(self, pset, shares: list):
        """The helpers forked for `pset` and these runs of chunks; forked anew for others."""
        if self._helpers is not None and (self._helpers.pset is not pset
                                          or self._helpers.shares != shares):
            self.close()
        if self._helpers is None:
            self._helpers = UnitProcesses(evaluate_share, self.groups, pset, shares)
            weakref.finalize(self, self._helpers.close)
        return self._helpers

    def helper_cpu_seconds(self) -> float:
        """CPU seconds this table's live helper processes have used (for benchmarks)."""
        mine = self._helpers.cpu_seconds() if self._helpers is not None else 0.0
        return mine + (self._on_distinct.helper_cpu_seconds() if self._on_distinct else 0.0)

    def close(self) -> None:
        """End this table's helper processes, if any (they end with the table or the
        process too)."""
        if self._helpers is not None:
            self._helpers.close()
            self._helpers = None
        if self._on_distinct is not None:
            self._on_distinct.close()

    def passed_nodes(self, tree, pset) -> list:
        """Per group, {node: statistic} for the nodes of `tree` that multiply a statistic by an
        identity constant where that statistic is `identity_safe` (checked once per group and
        statistic, on first need): a third of a default run's trees take matmul(eye_*,
        statistic), which is then the statistic itself."""
        operands = identity_operands(tree, pset)
        out = []
        for (inputs, _), known in zip(self.groups, self.identity_safe):
            for name in set(operands.values()) - known.keys():
                known[name] = identity_safe(inputs[name])
            out.append({node: name for node, name in operands.items() if known[name]})
        return out

    def safe_operands(self, tree, pset) -> list:
        """Per group, the statistics that `passed_nodes` takes as themselves."""
        return [frozenset(nodes.values()) for nodes in self.passed_nodes(tree, pset)]

    def worker_count(self) -> int:
        """The explicit `workers`; else torch's thread count on the CPU, one on CUDA."""
        if self.workers is not None:
            return self.workers
        return torch.get_num_threads() if self._on_cpu() else 1

    def units_per_chunk(self, inputs: dict) -> int:
        """The explicit `chunk_units`; else whole groups off the CPU or on several torch threads
        in one worker, and as many units as keep a chunk of the largest terminal within
        CHUNK_BYTES on one torch thread (one worker, or each of several; see CHUNK_BYTES)."""
        if self.chunk_units is not None:
            return self.chunk_units
        ref = next(iter(inputs.values()))
        if ref.device.type != "cpu" or (torch.get_num_threads() > 1 and self.worker_count() == 1):
            return len(ref)
        per_unit = max(t[0].numel() * t.element_size() for t in inputs.values())
        return max(1, CHUNK_BYTES // per_unit)

    def variant(self, chunk_units: Optional[int], workers: Optional[int] = None,
                processes: Optional[bool] = None) -> "StatsTable":
        """The same statistics (shared, not copied) with another chunking, worker count or
        worker kind and empty memos: to compare or time two paths in one process."""
        other = copy.copy(self)
        other.chunk_units, other.workers, other.processes = chunk_units, workers, processes
        other._helpers, other._helper_lock = None, threading.Lock()
        other.memos = [ScalarMemo(memo.max_entries) for memo in self.memos]
        other._on_distinct, other._made_lock = None, threading.Lock()
        return other

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for inputs, _ in self.groups for t in inputs.values())
