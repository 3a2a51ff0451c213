"""What evaluating trees costs on a split's stacked statistics, where the search spends its time.

Draws --trees random trees with the search's own generator (depth 2-5, seeded), scores each on the
split's stacked statistics (the warm cache), and reports per tree the wall and CPU time beside the
read floor: the bytes of the statistics the tree reads (for a tree that reads only statistics
repeated across items, their distinct units, which are what the table evaluates it on) over the
bandwidth of one `sum()` pass over them (measured here), i.e. what the tree would cost if each of
its terminals were read once and nothing else were done, and that ratio by kind of tree (those
holding `nuclear`, `logdet_gram`, `std`/`zscore`, `softmax`, or else element-wise ops), with each
kind's share of the mean. Then the CPU time per tree split into user and system time (system time
is mostly the kernel zeroing fresh pages for large temporaries) and the process's peak resident
memory. --workers N shares each tree's chunks out among N threads, each with torch on one thread
(auto: the table's own rule, torch's thread count on the CPU). --save writes the per-item scores,
so two builds (or two malloc settings, e.g. MALLOC_MMAP_THRESHOLD_=33554432 to switch
vit_space.core.malloc's heap reuse off) can be compared bit for bit with --compare.
--compare-chunking scores every tree both in chunks (--chunk-units, --workers) and on whole groups
with one worker (torch's threads within each op) in this one process, and reports both timings,
the largest relative difference of the scores and whether the JCMs are identical. --from-run DIR
scores the trees a search evaluated (its checkpoint's memo, in its order, one shared scalar memo
as in the search) instead of random ones, and --profile N prints the N torch ops that took most
CPU over them, and --primitives N the N typed primitives that took most wall time (each call's
own op: its arguments are computed before it): where a search's evaluation time goes.
--float32-linalg asks what cheaper arithmetic would buy: `nuclear` and `logdet_gram` take float32
Grams, eigenvalues and Cholesky factors instead of float64 ones (this changes scores: with
--compare, the trees whose scores, NaN patterns and JCMs change are counted). --linalg first times
what `nuclear` must spend in LAPACK on three statistics, its float64 Grams and eigenvalues alone,
beside their read floor. --literal evaluates
every op as written, without `primitives.rewrite`'s exact simplifications (the same scores), and
--all-units every unit, also those that repeat across items (the same scores).

    python benchmarks/tree_eval.py [--space autoformer] [--archs 20] [--trees 80] [--threads 2]
        [--chunk-units auto|whole|N] [--workers auto|N] [--save a.npy] [--compare b.npy]
        [--compare-chunking] [--from-run runs/evolve] [--profile 20] [--primitives 20]
        [--float32-linalg] [--linalg] [--literal] [--all-units]
"""
import argparse
import contextlib
import random
import resource
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from deap import gp  # noqa: E402

from gp.checkpoint import load_checkpoint  # noqa: E402
from gp.run import split_evaluator  # noqa: E402
from primitives import display_name, generate_tree, ops, parse_formula  # noqa: E402
from vit_space.scoring.table import one_torch_thread  # noqa: E402
from vit_space.setup_run import make_setup  # noqa: E402
from vit_space.stats.terminals import vit_primitive_set  # noqa: E402

WHOLE = sys.maxsize  # chunk_units of the unchunked path: more units than any group


WORKER_KINDS = {"auto": None, "processes": True, "threads": False}  # StatsTable's `processes`


def cpu_times() -> tuple:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def count_or_word(text: str, words: dict):
    """A count >= 1, or one of `words` (word -> the value it stands for)."""
    if text in words:
        return words[text]
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected {', '.join(words)} or an integer >= 1")
    return int(text)


def worker_setting(text: str):
    """--workers: auto (None, the table's own rule) or a thread count."""
    return count_or_word(text, {"auto": None})


def chunk_setting(text: str):
    """--chunk-units: auto (None, the table's own rule), whole (no chunking) or a unit count."""
    return count_or_word(text, {"auto": None, "whole": WHOLE})


def sum_bandwidth(table, repeats: int = 3) -> float:
    """Bytes per second of one `sum()` pass over every statistic of the table (best of
    `repeats`): the rate at which this machine can at best read what a tree reads."""
    tensors = [t for inputs, _ in table.groups for t in inputs.values()]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for t in tensors:
            t.sum()
        best = min(best, time.perf_counter() - start)
    return table.nbytes() / best


def bytes_read(table, tree, pset) -> int:
    """Bytes of the statistics `tree` reads, each distinct terminal once (constants are made), in
    the table that evaluates it: for a tree that reads only statistics repeated across items,
    their distinct units (`StatsTable.table_for`)."""
    names = {node.value for node in tree if isinstance(node, gp.Terminal)}
    return sum(t.numel() * t.element_size() for inputs, _ in table.table_for(tree, pset).groups
               for name, t in inputs.items() if name in names)


def timed(table, tree) -> tuple:
    """(scores, wall seconds, CPU seconds of the whole process, every thread counting, and of
    its helper processes)."""
    wall, cpu = time.perf_counter(), time.process_time() + table.helper_cpu_seconds()
    scores = table.scores(tree)
    return (scores, time.perf_counter() - wall,
            time.process_time() + table.helper_cpu_seconds() - cpu)


@contextlib.contextmanager
def primitive_times(pset, seconds: Counter, calls: Counter):
    """Within the block, every primitive of `pset` adds its calls' wall time to `seconds` and
    their number to `calls`, by its typed name (e.g. nuclear:Activation); restored after."""
    originals = {name: pset.context[name] for name, node in pset.mapping.items()
                 if isinstance(node, gp.Primitive)}

    def timing(name, fn):
        def call(*args, **own):
            start = time.perf_counter()
            out = fn(*args, **own)
            seconds[name] += time.perf_counter() - start
            calls[name] += 1
            return out
        call.__dict__.update(fn.__dict__)  # keeps markers such as numel's shape_only, takes_own
        return call

    pset.context.update({name: timing(name, fn) for name, fn in originals.items()})
    try:
        yield
    finally:
        pset.context.update(originals)


@contextlib.contextmanager
def float32_linear_algebra():
    """Within the block, `nuclear` and `logdet_gram` take float32 Grams (`ops._gram64` keeps its
    input's dtype), so their eigenvalues and Cholesky factors are float32 too: the ops
    themselves, on cheaper arithmetic."""
    float64 = ops._gram64
    ops._gram64 = lambda m, product=ops._row_gram: product(m)
    try:
        yield
    finally:
        ops._gram64 = float64


def linear_algebra_floor(table, bandwidth, names=("mlp_a", "msa_a", "msa_w"), units=68):
    """For each named statistic, what `nuclear` on it costs in LAPACK and its Grams alone (one
    thread, chunks of `units`, float64 as the op takes them) beside its read floor: the least a
    `nuclear` tree can take however the rest of it is evaluated."""
    with one_torch_thread():
        for name in names:
            tensors = [inputs[name] for inputs, _ in table.groups if name in inputs]
            grams = eig = 0.0
            for t in tensors:
                for start in range(0, len(t), units):
                    m = ops._rows(t[start:start + units])
                    a = time.perf_counter()
                    g = ops._small_gram(m.to(torch.float64))
                    b = time.perf_counter()
                    torch.linalg.eigvalsh(g)
                    grams, eig = grams + b - a, eig + time.perf_counter() - b
            floor = sum(t.numel() * t.element_size() for t in tensors) / bandwidth
            print(f"  nuclear({name}), one thread: float64 Grams {grams * 1e3:.0f} ms "
                  f"({grams / floor:.1f}x its read floor), eigvalsh {eig * 1e3:.0f} ms "
                  f"({eig / floor:.1f}x); read floor {floor * 1e3:.2f} ms")


def compare_scores(evaluator, scores, reference) -> str:
    """Whether `scores` are `reference` bit for bit, else in how many trees they, their NaN
    pattern and their JCM differ."""
    if np.array_equal(scores, reference, equal_nan=True):
        return "True"
    changed = [i for i in range(len(scores))
               if not np.array_equal(scores[i], reference[i], equal_nan=True)]
    nans = sum(not np.array_equal(np.isnan(scores[i]), np.isnan(reference[i])) for i in changed)
    jcms = sum(jcm_of(evaluator, scores[i]) != jcm_of(evaluator, reference[i]) for i in changed)
    return (f"False: scores differ in {len(changed)} of {len(scores)} trees, NaN patterns in {nans}, "
            f"JCMs in {jcms}")


def jcm_of(evaluator, flat) -> float:
    """The evaluator's JCM for these per-item scores (items are data set by data set)."""
    n = len(evaluator.indices)
    return evaluator.evaluate_scores({c: flat[i * n:(i + 1) * n]
                                      for i, c in enumerate(evaluator.columns)}).jcm


def ratio(a, b):
    """a / b, NaN where b is 0 (a tree of constants reads nothing)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.divide(a, b, out=np.full_like(a, np.nan), where=b > 0)


def max_relative_difference(a, b) -> float:
    both = np.isfinite(a) & np.isfinite(b)
    scale = np.maximum(np.abs(a[both]), np.abs(b[both]))
    diff = np.abs(a[both] - b[both])
    return float(np.max(np.where(scale > 0, diff / np.where(scale > 0, scale, 1), 0), initial=0))


# what a tree's cost is made of: the first kind whose primitives it holds, else element-wise (its
# ops are element-wise or one pass over each unit); the order puts the costliest kinds first
TREE_KINDS = {
    "nuclear": {"nuclear"},                          # a float64 eigenvalue problem per unit
    "logdet_gram": {"logdet_gram"},                  # a float64 Gram and Cholesky factor per unit
    "std/zscore": {"std", "zscore"},                 # float64 passes over every unit
    "softmax": {"softmax", "log_softmax"},
}


def tree_kind(tree) -> str:
    names = {display_name(node) for node in tree if isinstance(node, gp.Primitive)}
    return next((kind for kind, ops_ in TREE_KINDS.items() if names & ops_), "element-wise")


def print_kinds(trees, ratios):
    """The mean wall/floor ratio by tree kind, and each kind's share of the overall mean (its
    trees' ratios summed over all trees): which trees keep the mean where it is."""
    kinds = np.array([tree_kind(tree) for tree in trees])
    for kind in [*TREE_KINDS, "element-wise"]:
        mine = ratios[kinds == kind]
        if len(mine):
            print(f"  {kind:14s} {len(mine):4d} trees, wall/floor {np.nanmean(mine):5.1f}, "
                  f"adds {np.nansum(mine) / np.sum(np.isfinite(ratios)):4.2f} to the mean")


def run_plain(table, trees, floors):
    print(f"{'tree':>4} {'wall ms':>9} {'CPU ms':>9} {'floor ms':>9} {'wall/floor':>10} "
          f"{'CPU/floor':>9}  formula")
    rows = []
    for i, (tree, floor) in enumerate(zip(trees, floors)):
        scores, wall, cpu = timed(table, tree)
        rows.append((scores, wall, cpu))
        print(f"{i:4d} {wall * 1e3:9.2f} {cpu * 1e3:9.2f} {floor * 1e3:9.3f} {ratio(wall, floor):10.1f} "
              f"{ratio(cpu, floor):9.1f}  {str(tree)[:90]}")
    walls, cpus = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
    print(f"mean {walls.mean() * 1e3:9.2f} {cpus.mean() * 1e3:9.2f} {np.mean(floors) * 1e3:9.3f} "
          f"{np.nanmean(ratio(walls, floors)):10.1f} {np.nanmean(ratio(cpus, floors)):9.1f}  "
          f"(mean of the ratios)")
    print_kinds(trees, ratio(walls, floors))
    return np.stack([r[0] for r in rows])


def run_chunking(evaluator, table, trees, floors):
    """Each tree on whole groups (one worker) and in `table`'s chunks and workers, alternating
    which goes first; fresh memos."""
    whole, chunked = table.variant(WHOLE, workers=1), table.variant(table.chunk_units, table.workers)
    print(f"{'tree':>4} {'whole wall':>10} {'CPU':>7} {'chunked wall':>12} {'CPU':>7} {'floor':>7} "
          f"{'whole/floor':>11} {'chunked/floor':>13} {'max rel diff':>12}  formula  (ms)")
    out, stats = [], []
    for i, (tree, floor) in enumerate(zip(trees, floors)):
        first, second = (whole, chunked) if i % 2 == 0 else (chunked, whole)
        a, b = timed(first, tree), timed(second, tree)
        w, c = (a, b) if i % 2 == 0 else (b, a)
        rel = max_relative_difference(w[0], c[0])
        same_nan = bool(np.array_equal(np.isnan(w[0]), np.isnan(c[0])))
        same_jcm = jcm_of(evaluator, w[0]) == jcm_of(evaluator, c[0])
        stats.append((w[1], w[2], c[1], c[2], rel, same_nan, same_jcm,
                      np.array_equal(w[0], c[0], equal_nan=True)))
        out.append(c[0])
        print(f"{i:4d} {w[1] * 1e3:10.2f} {w[2] * 1e3:7.2f} {c[1] * 1e3:12.2f} {c[2] * 1e3:7.2f} "
              f"{floor * 1e3:7.3f} {ratio(w[1], floor):11.1f} {ratio(c[1], floor):13.1f} {rel:12.2e}  "
              f"{str(tree)[:70]}")
    s = np.array(stats, dtype=float)
    f = np.asarray(floors)
    print(f"mean {s[:, 0].mean() * 1e3:10.2f} {s[:, 1].mean() * 1e3:7.2f} {s[:, 2].mean() * 1e3:12.2f} "
          f"{s[:, 3].mean() * 1e3:7.2f} {f.mean() * 1e3:7.3f} {np.nanmean(ratio(s[:, 0], f)):11.1f} "
          f"{np.nanmean(ratio(s[:, 2], f)):13.1f}  (mean of the ratios)")
    print(f"chunked / whole: {s[:, 2].sum() / s[:, 0].sum():.2f} of the wall time, "
          f"{s[:, 3].sum() / s[:, 1].sum():.2f} of the CPU time; "
          f"max relative difference {s[:, 4].max():.2e}; "
          f"bit-identical {int(s[:, 7].sum())}/{len(trees)}; NaN patterns identical "
          f"{int(s[:, 5].sum())}/{len(trees)}; JCMs identical {int(s[:, 6].sum())}/{len(trees)}")
    return np.stack(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="autoformer")
    p.add_argument("--split", default="search")
    p.add_argument("--archs", type=int, help="the first N archs of the bench (default: all)")
    p.add_argument("--trees", type=int, default=80)
    p.add_argument("--seed", type=int, default=5, help="seed of the tree generator")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--chunk-units", type=chunk_setting, default=None,
                   help="units per chunk: auto (default), whole or N")
    p.add_argument("--workers", type=worker_setting, default=None,
                   help="threads sharing out the chunks: auto (default) or N")
    p.add_argument("--worker-kind", choices=sorted(WORKER_KINDS), default="auto",
                   help="workers as forked helper processes or as threads (auto: processes where "
                   "fork exists)")
    p.add_argument("--save", help="write the scores (trees x items) to this .npy file")
    p.add_argument("--compare", help="a .npy file written by --save: are the scores identical?")
    p.add_argument("--compare-chunking", action="store_true",
                   help="score every tree in chunks and on whole groups; compare the two")
    p.add_argument("--from-run", help="a run's folder: score the trees its search evaluated, in "
                   "its order (its --space and default data settings)")
    p.add_argument("--profile", type=int, default=0, help="print the N ops with most CPU time")
    p.add_argument("--primitives", type=int, default=0,
                   help="print the N typed primitives with most wall time")
    p.add_argument("--float32-linalg", action="store_true",
                   help="what if nuclear and logdet_gram worked in float32 (changes the scores)")
    p.add_argument("--linalg", action="store_true",
                   help="first time nuclear's Grams and eigenvalues alone on three statistics")
    p.add_argument("--literal", action="store_true",
                   help="evaluate every op as written (no exact simplification of the trees)")
    p.add_argument("--all-units", action="store_true",
                   help="evaluate every unit, also where the statistics a tree reads repeat "
                   "across items (the same scores)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    evaluator = split_evaluator(make_setup(space=args.space, archs=args.archs, quiet=True), args.split)
    table = evaluator.table.variant(args.chunk_units, args.workers, WORKER_KINDS[args.worker_kind])
    table.simplify, table.distinct_units = not args.literal, not args.all_units
    pset, rng = vit_primitive_set(), random.Random(args.seed)
    if args.from_run:  # the memo's formulas, in the order the search met them
        memo = load_checkpoint(Path(args.from_run) / "checkpoint.json")["memo"]
        trees = [parse_formula(formula, pset) for formula, *_ in memo]
        args.trees = len(trees)
    else:
        trees = [generate_tree(pset, 2, 5, rng) for _ in range(args.trees)]
    bandwidth = sum_bandwidth(table)
    floors = [bytes_read(table, tree, pset) / bandwidth for tree in trees]
    units = [min(table.units_per_chunk(inputs), len(o)) for inputs, o in table.groups]
    kind = (" (this process and helper processes)" if table.uses_processes() else " (threads)"
            ) if table.worker_count() > 1 else ""
    print(f"{args.space}, {args.split} split: {table.n_items} items, {table.nbytes() / 2**20:.0f} MiB "
          f"stacked in {len(table.groups)} groups of {[len(o) for _, o in table.groups]} units, "
          f"{args.trees} random trees, {torch.get_num_threads()} torch threads; units per chunk "
          f"{units}, {table.worker_count()} worker(s){kind}; sum() reads {bandwidth / 2**30:.1f} GiB/s")
    if args.linalg:
        linear_algebra_floor(table, bandwidth)
    if args.compare_chunking and units == [len(o) for _, o in table.groups] and table.worker_count() == 1:
        print("note: the chunks are the whole groups on one worker, so both paths are one; "
              "--chunk-units N or --workers N compares another")
    (user0, sys0), helpers0, wall0 = cpu_times(), table.helper_cpu_seconds(), time.perf_counter()
    seconds, calls = Counter(), Counter()
    with contextlib.ExitStack() as watching:
        if args.profile:
            prof = watching.enter_context(
                torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]))
        if args.float32_linalg:
            watching.enter_context(float32_linear_algebra())
        if args.primitives:
            watching.enter_context(primitive_times(pset, seconds, calls))
        if args.compare_chunking:
            scores = run_chunking(evaluator, table, trees, floors)
        else:
            scores = run_plain(table, trees, floors)
    (user1, sys1), wall = cpu_times(), time.perf_counter() - wall0
    helpers = table.helper_cpu_seconds() - helpers0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    per = args.trees * (2 if args.compare_chunking else 1)
    print(f"per evaluation: {(user1 - user0) / per:.3f} s user + {(sys1 - sys0) / per:.3f} s "
          f"system CPU, {helpers / per:.3f} s CPU in helper processes, {wall / per:.3f} s wall; "
          f"peak RSS {peak:.2f} GiB (this process)")
    if args.profile:  # the profiler's own overhead is in the times above
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile))
    if args.primitives:
        print(f"primitives, wall time of their own op over the {per} evaluations "
              f"(in all {sum(seconds.values()):.2f} s of {wall:.2f} s):")
        for name, spent in seconds.most_common(args.primitives):
            print(f"  {name:40s} {spent:7.2f} s  {calls[name]:5d} calls  {spent / calls[name] * 1e3:8.2f} ms")
    if args.save:
        np.save(args.save, scores)
    if args.compare:
        print(f"scores identical to {args.compare}: "
              f"{compare_scores(evaluator, scores, np.load(args.compare))}")


if __name__ == "__main__":
    main()
