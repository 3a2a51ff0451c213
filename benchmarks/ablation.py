"""Ablation of the search: top-k pool vs tournament selection, elitism-preserve on vs off, same
seeds and budget (the default P = 20, T = 200). Runs `runners/evolve.py` for each setting that has
no best.json yet under runs/, then prints search and test JCM as a markdown table.

    python benchmarks/ablation.py --space autoformer --seeds 0 1
"""
import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"topk + elitism": ["--select", "topk"],
            "topk, no elitism": ["--select", "topk", "--no-elitism"],
            "tournament + elitism": ["--select", "tournament"],
            "tournament, no elitism": ["--select", "tournament", "--no-elitism"]}


def out_dir(space: str, flags: list, seed: int) -> Path:
    name = f"abl-{space}-{flags[1]}{'-noelit' if '--no-elitism' in flags else ''}-s{seed}"
    return ROOT / "runs" / name


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="autoformer")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args, extra = p.parse_known_args()
    rows = {}
    for label, flags in SETTINGS.items():
        for seed in args.seeds:
            out = out_dir(args.space, flags, seed)
            if not (out / "best.json").exists():
                subprocess.run([sys.executable, str(ROOT / "runners" / "evolve.py"), "--space", args.space,
                                "--quiet", "--search-seed", str(seed), "--out", str(out), *flags, *extra,
                                *(["--resume"] if (out / "checkpoint.json").exists() else [])],
                               check=True, cwd=ROOT)
            best = json.loads((out / "best.json").read_text())
            rows.setdefault(label, []).append((best["search"]["jcm"], best["test"]["jcm"], best["formula"]))
    print(f"{args.space}, search seeds {args.seeds}: JCM per seed (search / test), and the mean\n")
    print("| setting | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean search | mean test |")
    print("| --- |" + " --- |" * (len(args.seeds) + 2))
    for label, runs in rows.items():
        cells = [f"{s:.3f} / {t:.3f}" for s, t, _ in runs]
        print(f"| {label} | " + " | ".join(cells) +
              f" | {statistics.mean(r[0] for r in runs):.3f} | {statistics.mean(r[1] for r in runs):.3f} |")


if __name__ == "__main__":
    main()
