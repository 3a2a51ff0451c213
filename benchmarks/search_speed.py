"""What a training-free architecture search costs per candidate, against one bare model pass.

1. `params` and `flops`: a full random search of --samples archs (`search_archs`, as
   `runners/search.py --proxy params --max-params 6e6` runs it): counted, no model built.
2. A tree proxy that reads data (--tree, default the shipped `autoprox-autoformer`), a tree over
   weights alone (--weights-tree: the model is built, no batch run) and `nwot`: on the first
   --data-samples archs of the same sample, interleaved arch by arch with a bare pass (model
   build + one cross-entropy forward/backward at the same batch), so the ratio compares like with
   like under whatever else runs. Candidates' statistics stay in memory (an
   empty temporary cache is checked to stay empty). The per-candidate cost times --samples is the
   extrapolated search time. Times are CPU seconds of the process (one torch thread by default).

    python benchmarks/search_speed.py --samples 1000 --data-samples 10
"""
import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from vit_space.data.batches import make_batch  # noqa: E402
from vit_space.data.datasets import NUM_CLASSES  # noqa: E402
from vit_space.models.builders import build_model  # noqa: E402
from vit_space.scoring.proxies import resolve_proxy  # noqa: E402
from vit_space.search.candidates import ArchScorer  # noqa: E402
from vit_space.search.constraints import Constraints, sample_fitting  # noqa: E402
from vit_space.search.strategies import ArchSearchConfig, search_archs  # noqa: E402
from vit_space.stats.cache import StatsCache  # noqa: E402
from vit_space.stats.statistics import StatsConfig  # noqa: E402


def bare_pass(space, arch, cfg, dataset):
    """What any data-dependent proxy must at least do: build the model, one forward/backward."""
    model = build_model(space, arch, NUM_CLASSES[dataset], cfg.img_size)
    images, labels = make_batch(dataset, cfg.batch_size, cfg.img_size, cfg.seed)
    F.cross_entropy(model(images), labels).backward()


def timed(fn):
    """CPU seconds of this process: beside other jobs, wall time would measure them too."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="autoformer")
    p.add_argument("--max-params", type=float, default=6e6)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--data-samples", type=int, default=10, help="archs timed for the data proxies")
    p.add_argument("--tree", default="autoprox-autoformer")
    p.add_argument("--weights-tree", default="add(nuclear(msa_w), nuclear(mlp_w))",
                   help="a tree over weights alone: the model is built, no batch is run")
    p.add_argument("--dataset", default="c100")
    p.add_argument("--threads", type=int, default=1, help="torch threads (CPU time is then close "
                   "to the wall time of an idle core)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, budget = StatsConfig(), Constraints(max_params=args.max_params,
                                             num_classes=NUM_CLASSES[args.dataset])
    with tempfile.TemporaryDirectory() as root:
        cache = StatsCache(Path(root))
        print(f"{args.space}, --max-params {args.max_params:g}, batch {cfg.batch_size}, "
              f"{cfg.img_size} px, {torch.get_num_threads()} torch thread(s)\n")
        print("| proxy | candidates timed | CPU s per candidate | ratio to a bare build + fwd/bwd | "
              f"{args.samples} samples |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name in ("params", "flops"):
            scorer = ArchScorer(resolve_proxy(name), args.space, cfg, cache, args.dataset)
            config = ArchSearchConfig(samples=args.samples, top=1, seed=0)
            seconds = timed(lambda: search_archs(scorer, budget, config))
            print(f"| {name} | {args.samples} | {seconds / args.samples:.2e} | - | {seconds:.1f} s |")
        archs = sample_fitting(args.space, random.Random(0), budget, args.data_samples)
        scorers = {name: ArchScorer(resolve_proxy(name), args.space, cfg, cache, args.dataset)
                   for name in (args.tree, args.weights_tree, "nwot")}
        times = {name: [] for name in ["bare"] + list(scorers)}
        bare_pass(args.space, archs[0], cfg, args.dataset)  # warm-up: first-call allocations
        for arch in archs:
            times["bare"].append(timed(lambda: bare_pass(args.space, arch, cfg, args.dataset)))
            for name, scorer in scorers.items():
                times[name].append(timed(lambda: scorer(arch)))
        bare = sum(times["bare"]) / len(archs)
        for name in ["bare"] + list(scorers):
            per = sum(times[name]) / len(archs)
            shown = "bare build + fwd/bwd" if name == "bare" else name
            print(f"| {shown} | {len(archs)} | {per:.2f} | {per / bare:.2f} | "
                  f"{per * args.samples / 60:.1f} min (extrapolated) |")
        written = list(Path(root).rglob("*"))
        print(f"\nfiles written to the statistics cache: {len(written)}")


if __name__ == "__main__":
    main()
