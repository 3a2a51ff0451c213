"""Cost of the full default search: cold (empty statistics cache) and warm (cache filled).

Runs `runners/evolve.py` twice as a child process with a fresh cache directory, and reports for
each run its wall time, CPU time (user + system: more than the wall when torch's threads work in
parallel, and the better guide when other jobs share the cores), its own peak resident memory and
the cache size on disk. Extra arguments are passed to evolve.py (e.g. `--space pit`, or `--iters
20` for a quick look). Torch's default threads: nothing is set in the environment.

    python benchmarks/evolve_cost.py [--cache DIR] [--keep] [-- evolve.py arguments]
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list) -> tuple:
    """(wall s, cpu s, peak RSS GiB) of one child process, from its own rusage."""
    start = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=ROOT)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (status {status})")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 2**20


def results(out: Path):
    """best.json without its timings."""
    def drop(value):
        if isinstance(value, dict):
            return {k: drop(v) for k, v in value.items() if k != "seconds"}
        return [drop(v) for v in value] if isinstance(value, list) else value
    return drop(json.loads((out / "best.json").read_text()))


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
    print(f"load average at start: {os.getloadavg()[0]:.1f} (other jobs on the cores slow both runs)")
    for name in ("cold", "warm"):
        wall, cpu, peak = run(base + ["--out", str(out / name)])
        print(f"{name}: {wall:.0f} s wall, {cpu:.0f} s cpu, peak RSS {peak:.2f} GiB, "
              f"cache {du(cache):.2f} GiB, load average now {os.getloadavg()[0]:.1f}", flush=True)
    same = results(out / "cold") == results(out / "warm")
    print(f"cold and warm best.json identical (but for timings): {same}")
    if not args.cache and not args.keep:
        shutil.rmtree(cache)
    shutil.rmtree(out)


if __name__ == "__main__":
    main()
