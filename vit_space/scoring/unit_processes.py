"""Forked helper processes that evaluate a share of every group's chunks of units.

Worker threads in one process take turns at the GIL: every torch call drops it and takes it back,
and a tensor freed inside a kernel takes it too, so two threads wait on each other hundreds of
times per tree (the default run's 489 trees, 2-core Xeon: 46-48 ms per tree on two threads,
where two one-thread processes each took 75-78 ms for all of them, as fast as one alone). A
helper forked from the process that holds the statistics shares their pages and has a GIL of
its own: 41-42 ms per tree, the same bits (docs/performance.md).

The caller's memo stays the only one: with each tree (and its subtree keys, made once by the
caller) a helper is sent the memo's vectors for its share of units and the identity products
that pass, and it sends back its chunks' values and the
scalar results they made, which the caller joins with its own as `table.join_chunks` does.
"""
from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import sys
import warnings

import numpy as np
import torch
from deap import gp


def fork_available() -> bool:
    """Helpers need fork (the statistics are shared, not copied): Linux, not macOS or Windows."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def share_out(slices: list, count: int) -> list:
    """`slices` (a group's chunks, in order) as `count` runs of consecutive chunks, as even as
    the chunks allow; a run may be empty."""
    bounds = np.linspace(0, len(slices), count + 1).round().astype(int)
    return [slices[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _to_numpy(parts: list) -> list:
    return [[(v.numpy(), {k: m.numpy() for k, m in made.items()}) for v, made in group]
            for group in parts]


def _from_numpy(parts: list) -> list:
    return [[(torch.from_numpy(v), {k: torch.from_numpy(m) for k, m in made.items()})
             for v, made in group] for group in parts]


def pset_nodes(pset) -> dict:
    """{name: node} of every primitive and terminal of `pset`: a tree goes to a helper as its
    nodes' names (its types are made at run time, so pickle cannot name them), and the helper,
    forked with the same set, looks them up."""
    return {node.name: node for table in (pset.primitives, pset.terminals)
            for nodes in table.values() for node in nodes}


def _serve(conn, evaluate, groups, pset, shares) -> None:
    """A helper's loop: a job in, its share's chunk results out, until the caller closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle
    # what the helper inherits lives as long as it does: out of the collector's sight, a full
    # collection no longer walks the caller's ~210 000 objects (110 ms, once per helper in a
    # default run) nor writes to the pages they share with the caller
    gc.freeze()
    torch.set_num_threads(1)
    origins = [parts[0].start if parts else 0 for parts in shares]
    nodes = pset_nodes(pset)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:  # the caller's stop: a later helper may hold this pipe open, so no EOF
            return
        names, keys, passed, known = job
        try:
            tree = gp.PrimitiveTree([nodes[name] for name in names])
            memos = [{k: torch.from_numpy(v) for k, v in group.items()} for group in known]
            parts = evaluate(tree, pset, groups, shares, memos, origins, keys, passed)
            answer = ("ok", _to_numpy(parts))
        except Exception as error:  # noqa: BLE001 -- reported to the caller, who raises it
            answer = ("error", f"{type(error).__name__}: {error}")
        try:
            conn.send(answer)
        except OSError:  # the caller stopped waiting (interrupted) and closed the pipe
            return


class UnitProcesses:
    """A helper forked now per share of every group's chunks (`shares[k]`: helper k's runs, one
    per group), each answering a tree with `evaluate(tree, pset, groups, its runs, memos, origins,
    keys, passed)`: per group, [(values, made)] of its chunks, `memos[g]` holding vectors that
    start at unit `origins[g]`. Bound to `pset`: the helpers run the set they were forked with."""

    def __init__(self, evaluate, groups: list, pset, shares: list):
        context = multiprocessing.get_context("fork")
        self.pset, self.shares, self.helpers, self.nodes = pset, shares, [], pset_nodes(pset)
        with warnings.catch_warnings():  # 3.12+ warns of forking beside threads; the child
            warnings.simplefilter("ignore", DeprecationWarning)  # runs none and takes no lock
            for share in shares:
                mine, theirs = context.Pipe()
                process = context.Process(target=_serve, daemon=True, name="scoring-units",
                                          args=(theirs, evaluate, groups, pset, share))
                process.start()
                theirs.close()
                self.helpers.append((process, mine))

    def knows(self, tree) -> bool:
        """Whether every node of `tree` is one of the set's own (not, say, an ephemeral's)."""
        return all(self.nodes.get(node.name) is not None for node in tree)

    def send(self, tree, keys: tuple, passed: list, memos: list) -> None:
        """Hand every helper `tree` and its `keys` (`subtree_keys(tree)`, which the caller has
        made already), with the memo's vectors of its subtrees sliced to the helper's share
        (`dict.__contains__`: the LRU order is the caller's walk's to touch)."""
        formulas = set(keys[0].values())
        names = [node.name for node in tree]
        for (_, conn), share in zip(self.helpers, self.shares):
            known = []
            for memo, parts in zip(memos, share):
                span = slice(parts[0].start, parts[-1].stop) if parts else slice(0, 0)
                known.append({k: memo[k][span].numpy() for k in formulas
                              if dict.__contains__(memo, k)})
            conn.send((names, keys, passed, known))

    def receive(self) -> list:
        """Per helper, per group, [(values, made)] of its chunks; RuntimeError where a helper
        failed (every helper's answer is read first, so the next tree starts clean)."""
        answers = [conn.recv() for _, conn in self.helpers]
        for status, detail in answers:
            if status != "ok":
                raise RuntimeError(f"scoring helper process: {detail}")
        return [_from_numpy(detail) for _, detail in answers]

    def cpu_seconds(self) -> float:
        """User and system CPU the helpers have used so far (a live child is in no getrusage
        count of the caller's), from /proc; 0 where there is none."""
        total = 0
        for process, _ in self.helpers:
            try:
                with open(f"/proc/{process.pid}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
        return total / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        """End the helpers: each is told to stop (a helper forked later holds a copy of the
        pipe, so closing it is no signal); one that does not is terminated."""
        for process, conn in self.helpers:
            try:
                conn.send(None)
            except OSError:  # it is gone already
                pass
            conn.close()
        for process, _ in self.helpers:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join()
        self.helpers = []

