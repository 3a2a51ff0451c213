"""Cached evaluator vs the recompute path, on the same archs and the same candidate trees.

Recompute path (what the authors' code does for every candidate): build each ViT, run the
forward/backward on the batch, take the statistics, evaluate the tree. Cached path: evaluate the
tree on the statistics already stacked in memory (warm). Also the memory floor: the time to read
once every statistics tensor the tree touches. Last line: `speedup: X.Xx` (median over trees).

    python benchmarks/eval_speed.py [--archs 10] [--trees 20] [--batch-size 16] [--img-size 224]
"""
import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from primitives import generate_tree  # noqa: E402
from vit_space.data.bench import open_bench  # noqa: E402
from vit_space.scoring.table import StatsTable  # noqa: E402
from vit_space.stats.statistics import StatsConfig, extract_stats  # noqa: E402
from vit_space.stats.terminals import vit_primitive_set  # noqa: E402


def candidate_trees(n: int, seed: int) -> list:
    """Random trees that are valid on the statistics (the kind the search evaluates)."""
    pset, rng = vit_primitive_set(), random.Random(seed)
    return [generate_tree(pset, 2, 5, rng) for _ in range(n)]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="autoformer")
    p.add_argument("--dataset", default="c100")
    p.add_argument("--archs", type=int, default=10)
    p.add_argument("--trees", type=int, default=20)
    p.add_argument("--recompute-trees", type=int, default=3, help="trees timed on the slow path")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    bench = open_bench(args.space)
    archs = bench.archs(range(args.archs))
    cfg = StatsConfig(batch_size=args.batch_size, img_size=args.img_size, seed=args.seed)
    pset = vit_primitive_set()
    trees = candidate_trees(args.trees, args.seed)
    print(f"{args.space}, {args.archs} archs, {args.dataset}, batch {args.batch_size}, "
          f"{args.img_size} px, {args.trees} trees, torch threads {torch.get_num_threads()}")

    recompute, items = [], []
    for tree in trees[:args.recompute_trees]:
        start = time.perf_counter()
        items = [extract_stats(args.space, a, args.dataset, cfg) for a in archs]
        StatsTable(items).scores(tree, pset)
        recompute.append(time.perf_counter() - start)

    table = StatsTable(items)  # the statistics the recompute path just made, now kept
    cached, floor = [], []
    for tree in trees:
        terminals = {node.value for node in tree if hasattr(node, "value")}
        runs = []
        for _ in range(args.repeats):
            table.clear_memos()  # time real evaluation, not memo look-ups
            start = time.perf_counter()
            table.scores(tree, pset)
            runs.append(time.perf_counter() - start)
        cached.append(min(runs))
        start = time.perf_counter()
        for _ in range(args.repeats):
            for inputs, _owner in table.groups:
                for name in terminals & set(inputs):
                    inputs[name].sum()
        floor.append((time.perf_counter() - start) / args.repeats)

    slow, fast, read = (statistics.median(x) for x in (recompute, cached, floor))
    print(f"recompute path: median {slow * 1e3:.1f} ms per candidate (build + forward/backward "
          f"+ tree, {len(recompute)} trees)")
    print(f"cached evaluator: median {fast * 1e3:.2f} ms per candidate (warm, memo cleared)")
    print(f"memory floor: median {read * 1e3:.2f} ms to read the touched statistics once")
    print(f"speedup: {slow / fast:.1f}x")


if __name__ == "__main__":
    main()
