"""What evaluating trees costs on a split's stacked statistics, where the search spends its time.

Draws --trees random trees with the search's own generator (depth 2-5, seeded), scores each on the
split's stacked statistics (the warm cache), and reports the CPU time per tree split into user and
system time (system time is mostly the kernel zeroing fresh pages for large temporaries) and the
process's peak resident memory. --save writes the per-item scores, so two builds (or two malloc
settings, e.g. MALLOC_MMAP_THRESHOLD_=33554432 to switch vit_space.core.malloc's heap reuse off) can
be compared bit for bit with --compare.

    python benchmarks/tree_eval.py [--space autoformer] [--trees 80] [--save a.npy] [--compare b.npy]
"""
import argparse
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from gp.run import split_evaluator  # noqa: E402
from primitives import generate_tree  # noqa: E402
from vit_space.setup_run import make_setup  # noqa: E402
from vit_space.stats.terminals import vit_primitive_set  # noqa: E402


def cpu_times() -> tuple:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="autoformer")
    p.add_argument("--split", default="search")
    p.add_argument("--trees", type=int, default=80)
    p.add_argument("--seed", type=int, default=5, help="seed of the tree generator")
    p.add_argument("--save", help="write the scores (trees x items) to this .npy file")
    p.add_argument("--compare", help="a .npy file written by --save: are the scores identical?")
    args = p.parse_args()
    evaluator = split_evaluator(make_setup(space=args.space, quiet=True), args.split)
    pset, rng = vit_primitive_set(), random.Random(args.seed)
    trees = [generate_tree(pset, 2, 5, rng) for _ in range(args.trees)]
    (user0, sys0), wall0 = cpu_times(), time.perf_counter()
    scores = np.stack([evaluator.table.scores(tree) for tree in trees])
    (user1, sys1), wall = cpu_times(), time.perf_counter() - wall0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{args.space}, {args.split} split: {evaluator.table.n_items} items, "
          f"{evaluator.table.nbytes() / 2**20:.0f} MiB stacked, {args.trees} random trees")
    print(f"per tree: {(user1 - user0) / args.trees:.3f} s user + {(sys1 - sys0) / args.trees:.3f} s "
          f"system CPU, {wall / args.trees:.3f} s wall; peak RSS {peak:.2f} GiB")
    if args.save:
        np.save(args.save, scores)
    if args.compare:
        print(f"scores identical to {args.compare}: "
              f"{np.array_equal(scores, np.load(args.compare), equal_nan=True)}")


if __name__ == "__main__":
    main()
