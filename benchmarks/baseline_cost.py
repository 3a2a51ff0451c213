"""What each direct baseline costs per (arch, data set), alone and on the shared path.

For the first --archs archs of the bench's test split (data set c100, the default 224 px batch of
16): one model build, then every baseline computed alone (its own passes, as `score_baseline`),
then all of them as `runners/rank.py --proxy all` computes them (`baseline_scores`' item: params and
FLOPs counted, the rest from one build and one SharedPass). Prints a markdown table of mean CPU
seconds per item (process time: on a shared machine wall time would measure the other jobs too)
and the extrapolation to the AutoFormer test split (120 items = 40 archs x 3) on --cores workers
(`--jobs N`, one torch thread each: CPU seconds divide over the cores).

    python benchmarks/baseline_cost.py --archs 3
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from vit_space.data.batches import make_batch  # noqa: E402
from vit_space.data.bench import find_bench, load_bench  # noqa: E402
from vit_space.data.datasets import NUM_CLASSES  # noqa: E402
from vit_space.models.builders import build_model  # noqa: E402
from vit_space.models.costs import ANALYTIC_BASELINES, arch_cost  # noqa: E402
from vit_space.scoring.baseline_scores import _score_item  # noqa: E402
from vit_space.scoring.baselines import BASELINES, shared_names  # noqa: E402
from vit_space.stats.statistics import StatsConfig  # noqa: E402


def timed(fn):
    """(CPU seconds of this process, value): beside other jobs, wall time measures the others too."""
    start = time.process_time()
    value = fn()
    return time.process_time() - start, value


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="autoformer")
    p.add_argument("--archs", type=int, default=3)
    p.add_argument("--dataset", default="c100")
    p.add_argument("--threads", type=int, default=1, help="torch threads (as one --jobs worker)")
    p.add_argument("--items", type=int, default=120, help="items to extrapolate to")
    p.add_argument("--cores", type=int, default=2, help="workers to extrapolate to")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = StatsConfig()  # the defaults: batch 16, 224 px, seed 0
    bench = load_bench(find_bench(args.space), args.space)
    archs = bench.archs(bench.split("test", 0)[:args.archs])
    classes = NUM_CLASSES[args.dataset]
    names = list(BASELINES)
    alone = {n: [] for n in ["build"] + names}
    shared, values = [], []
    with tempfile.TemporaryDirectory() as root:
        for arch in archs:
            seconds, model = timed(lambda: build_model(args.space, arch, classes, cfg.img_size))
            alone["build"].append(seconds)
            images, labels = make_batch(args.dataset, cfg.batch_size, cfg.img_size, cfg.seed)
            for n in names:
                seconds, value = timed(lambda: BASELINES[n].fn(model, images, labels, scope="all"))
                alone[n].append(seconds)
                values.append((n, value))
            del model
            seconds, out = timed(lambda: _score_item(Path(root), names, args.space, arch, args.dataset,
                                                     cfg, "all", "cpu", 0))
            shared.append(seconds)
            print({n: round(v[-1], 3) for n, v in alone.items()}, "shared", round(seconds, 3), flush=True)
            for n, value in values[-len(names):]:
                assert abs(out[n] - value) <= 1e-5 * abs(value) + 1e-12, (n, out[n], value)
    mean = {n: sum(v) / len(v) for n, v in alone.items()}
    counted = [n for n in names if n in ANALYTIC_BASELINES]
    print(f"{args.space}, {len(archs)} test archs x {args.dataset}, batch {cfg.batch_size}, "
          f"{cfg.img_size} px, {torch.get_num_threads()} torch thread(s)\n")
    print("| baseline | alone, CPU s per item | on the shared path |")
    print("| --- | ---: | --- |")
    print(f"| model build | {mean['build']:.2f} | one build |")
    sharing = shared_names([n for n in names if n not in counted])
    for n in names:
        how = ("counted (no model)" if n in counted else "own pass" if n not in sharing
               else f"reads {', '.join(sorted(BASELINES[n].uses))}")
        print(f"| {n} | {mean[n]:.2f} | {how} |")
    total_alone = sum(mean.values())
    per_item = sum(shared) / len(shared)
    print(f"| **all 11, each alone** | {total_alone:.1f} | |")
    print(f"| **all 11, shared path** | {per_item:.1f} | x{total_alone / per_item:.1f} less |")
    print(f"\n{args.items} items on {args.cores} cores: {per_item * args.items / args.cores / 60:.1f} min "
          f"(each alone: {total_alone * args.items / args.cores / 60:.1f} min); "
          f"analytic count check: {arch_cost(args.space, archs[0], cfg.img_size, classes)}")


if __name__ == "__main__":
    main()
