"""How cost grows: extraction time with the batch size, cached evaluation time with the number of
archs and with the tree size. Prints a markdown table per factor. The arch sweep reads the
default statistics cache (extracting what is missing).

    python benchmarks/scaling.py [--space autoformer] [--img-size 224]
"""
import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from primitives import generate_tree  # noqa: E402
from vit_space.data.bench import open_bench  # noqa: E402
from vit_space.scoring.table import StatsTable  # noqa: E402
from vit_space.stats.cache import StatsCache  # noqa: E402
from vit_space.stats.statistics import StatsConfig, extract_stats  # noqa: E402
from vit_space.stats.terminals import vit_primitive_set  # noqa: E402


def timed(fn, repeats=3):
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return min(runs)


def median_eval_ms(table, trees, pset) -> float:
    """Median over trees of the best-of-3 time of a real (memo cleared) cached evaluation."""
    def once(tree):
        table.clear_memos()
        table.scores(tree, pset)
    return statistics.median(timed(lambda: once(tree)) for tree in trees) * 1e3


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="autoformer")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--trees", type=int, default=15)
    args = p.parse_args()
    bench, pset = open_bench(args.space), vit_primitive_set()

    print("| batch size | extraction s / arch |\n| --- | --- |")
    arch = bench.records[0]["arch"]
    for batch in (4, 8, 16, 32):
        cfg = StatsConfig(batch_size=batch, img_size=args.img_size)
        print(f"| {batch} | {timed(lambda: extract_stats(args.space, arch, 'c100', cfg), 2):.2f} |")

    cfg = StatsConfig(img_size=args.img_size)
    cache = StatsCache()  # the default cache: warm after runners/extract.py
    items = [cache.get(args.space, r["arch"], "c100", cfg) for r in bench.records[:60]]
    rng = random.Random(0)
    trees = [generate_tree(pset, 2, 5, rng) for _ in range(args.trees)]
    print("\n| archs (x 1 data set) | cached evaluation ms / tree (median) |\n| --- | --- |")
    for n in (10, 20, 40, 60):
        print(f"| {n} | {median_eval_ms(StatsTable(items[:n]), trees, pset):.1f} |")

    table = StatsTable(items[:20])
    print("\n| tree size (nodes) | cached evaluation ms / tree (median, 20 archs) |\n| --- | --- |")
    by_size = {}
    for depth in range(1, 9):
        for _ in range(40):
            tree = generate_tree(pset, depth, depth, rng)
            by_size.setdefault(min(len(tree) // 5 * 5, 30), []).append(tree)
    for size in sorted(by_size):
        label = f"{size}-{size + 4}{'+' if size == 30 else ''}"
        print(f"| {label} | {median_eval_ms(table, by_size[size][:10], pset):.1f} |")


if __name__ == "__main__":
    main()
