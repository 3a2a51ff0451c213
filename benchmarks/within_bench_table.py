"""The within-bench check for several proxies at once, as a markdown table: per data set, the true
accuracy of each proxy's top-1 pick among the bench's test archs, its percentile there, and the
best accuracy in the split. Direct baselines reuse the scores `runners/rank.py` cached.

    python benchmarks/within_bench_table.py --space pit --proxies "params;snip;autoprox-pit"
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vit_space.scoring.proxies import resolve_proxies  # noqa: E402
from vit_space.search.report import within_bench  # noqa: E402
from vit_space.setup_run import make_setup  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="autoformer")
    p.add_argument("--proxies", default="all")
    p.add_argument("--split", default="test")
    args = p.parse_args()
    setup = make_setup(space=args.space, quiet=True)
    reports = [within_bench(setup, proxy, args.split) for proxy in resolve_proxies(args.proxies)]
    datasets = setup.datasets
    print(f"{args.space} bench, {args.split} split (n = {reports[0]['n']}): top-1 accuracy "
          "(percentile) per data set\n")
    print("| proxy | " + " | ".join(datasets) + " |")
    print("| --- |" + " --- |" * len(datasets))
    for r in reports:
        cells = [f"{d['top1_acc']:.2f} ({d['percentile']:.0f})" if d else "invalid"
                 for d in (r["datasets"][name] for name in datasets)]
        print(f"| {r['proxy']} | " + " | ".join(cells) + " |")
    best = [next(r["datasets"][name]["best_acc"] for r in reports if r["datasets"][name])
            for name in datasets]
    print("| *best in split* | " + " | ".join(f"{b:.2f} (100)" for b in best) + " |")


if __name__ == "__main__":
    main()
