"""Cost of the full default search: cold (empty statistics cache) and warm (cache filled).

Runs `runners/evolve.py` twice as a child process with a fresh cache directory, and reports wall
time, the child's peak resident memory and the cache size on disk. Extra arguments are passed to
evolve.py (e.g. `--space pit`, or `--iters 20` for a quick look).

    python benchmarks/evolve_cost.py [--cache DIR] [--keep] [-- evolve.py arguments]
"""
import argparse
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list) -> tuple:
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(cmd, check=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak_kib, before) / 2**20


def du(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**30


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", help="cache directory to use (default: a new temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the temporary cache")
    args, extra = p.parse_known_args()
    extra = [a for a in extra if a != "--"]
    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="autoprox-cache-"))
    out = Path(tempfile.mkdtemp(prefix="autoprox-evolve-"))
    base = [sys.executable, str(ROOT / "runners" / "evolve.py"), "--cache", str(cache), "--quiet", *extra]
    print(f"machine: {platform.machine()}, {shutil.os.cpu_count()} cores, python {platform.python_version()}")
    print("command:", " ".join(base[1:]), "--out DIR")
    cold = run(base + ["--out", str(out / "cold")])
    print(f"cold: {cold[0]:.0f} s, peak RSS {cold[1]:.2f} GiB, cache {du(cache):.2f} GiB")
    warm = run(base + ["--out", str(out / "warm")])
    print(f"warm: {warm[0]:.0f} s, peak RSS (max of both runs) {warm[1]:.2f} GiB")
    same = (out / "cold" / "best.json").read_text() == (out / "warm" / "best.json").read_text()
    print(f"cold and warm best.json identical: {same}")
    if not args.cache and not args.keep:
        shutil.rmtree(cache)
    shutil.rmtree(out)


if __name__ == "__main__":
    main()
