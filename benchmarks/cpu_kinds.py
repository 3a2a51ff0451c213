"""How much the figures move on another CPU: the same ranking recomputed under other kernels.

Initial weights and the synthetic batch are the same bits on any CPU (vit_space.core.portable_random);
what still differs is the forward/backward float rounding of torch's kernels, which are picked per
instruction set (ATEN_CPU_CAPABILITY stands in for another CPU kind) and split reductions by the
thread count. Each setting runs `runners/rank.py` in a fresh process with a cache of its own
(statistics extracted there), and the reports are compared with the reference setting's: per-arch
score differences, Kendall tau and JCM per proxy.

    python benchmarks/cpu_kinds.py --space autoformer --split test \\
        --settings machine ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1 --reference-cache ~/.cache/autoprox
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PROXIES = "autoprox-autoformer;autoprox-pit;autoprox-autoformer-paper;autoprox-pit-paper;params;nwot"


def run_setting(setting: str, args, out: Path) -> tuple:
    """rank.py under SETTING ('machine' = the environment as it is, else NAME=VALUE[,NAME=VALUE])."""
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS")}
    if setting != "machine":
        env.update(part.split("=", 1) for part in setting.split(","))
    tag = setting.replace("=", "-").replace(",", "_")
    report, scores = out / f"{tag}.json", out / f"{tag}-scores.json"
    if not report.exists():
        reuse = args.reference_cache and setting == args.settings[0]
        cache = Path(args.reference_cache) if reuse else out / f"cache-{tag}"
        cmd = [sys.executable, str(ROOT / "runners" / "rank.py"), "--space", args.space, "--split", args.split,
               "--proxy", args.proxies, "--cache", str(cache), "--json", str(report), "--scores", str(scores),
               "--quiet", *args.extra]
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads(report.read_text()), json.loads(scores.read_text())


def score_table(rows: list) -> dict:
    return {(r["proxy"], r["column"], r["index"]): r["score"] for r in rows}


def compare(reference: tuple, other: tuple) -> list:
    """Per proxy: the largest relative score difference, the largest |delta tau| and delta JCM."""
    (ref_report, ref_rows), (report, rows) = reference, other
    ref_scores, scores = score_table(ref_rows), score_table(rows)
    lines = []
    for proxy, entry in ref_report["proxies"].items():
        keys = [k for k in ref_scores if k[0] == proxy]
        a = np.array([ref_scores[k] if ref_scores[k] is not None else np.nan for k in keys])
        b = np.array([scores[k] if scores[k] is not None else np.nan for k in keys])
        with np.errstate(all="ignore"):
            rel = np.nanmax(np.abs(a - b) / np.maximum(np.abs(a), 1e-300)) if len(a) else 0.0
        taus = [abs(entry["datasets"][c]["kendall"] - report["proxies"][proxy]["datasets"][c]["kendall"])
                for c in entry["datasets"] if entry["datasets"][c] and report["proxies"][proxy]["datasets"][c]]
        lines.append((proxy, float(rel), max(taus) if taus else float("nan"),
                      report["proxies"][proxy]["jcm"] - entry["jcm"], entry["jcm"]))
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="autoformer")
    p.add_argument("--split", default="test")
    p.add_argument("--proxies", default=DEFAULT_PROXIES)
    p.add_argument("--settings", nargs="+", default=["machine", "ATEN_CPU_CAPABILITY=default", "OMP_NUM_THREADS=1"],
                   help="the first is the reference")
    p.add_argument("--reference-cache", help="the first setting's statistics cache, e.g. the default "
                   "cache filled on this machine (default: a fresh one under --out, like the others)")
    p.add_argument("--out", default="runs/cpu_kinds")
    p.add_argument("extra", nargs="*", help="more rank.py options after --, e.g. -- --archs 20")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {s: run_setting(s, args, out) for s in args.settings}
    reference = results[args.settings[0]]
    print(f"{args.space}, {args.split} split: each setting against {args.settings[0]}")
    print("| setting | proxy | JCM (reference) | JCM change | largest tau change | largest relative score change |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for setting in args.settings[1:]:
        for proxy, rel, tau, djcm, jcm in compare(reference, results[setting]):
            print(f"| {setting} | {proxy} | {jcm:.4f} | {djcm:+.4f} | {tau:.4f} | {rel:.1e} |")


if __name__ == "__main__":
    main()
