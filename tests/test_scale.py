"""Scale: statistics and baseline scores computed on a dask.distributed cluster (2 worker
processes) or on loky workers equal, bit for bit, what one process computes; a bad scheduler is a
BadInput; and thousands of tree evaluations in one process keep the memo within its bound, live
memory flat and every fitness a number (never NaN).

Everything runs on one torch thread per process (the cores are shared), so floating-point
reductions happen in the same order everywhere and equality can be exact.
"""
import ctypes
import ctypes.util
import gc
import math
import os
import random

import numpy as np
import pytest

from primitives import generate_tree
from vit_space.core.errors import BadInput
from vit_space.scoring.baseline_scores import baseline_scores
from vit_space.scoring.jcm import WORST, correlations, jcm
from vit_space.scoring.table import StatsTable
from vit_space.stats.cache import StatsCache
from vit_space.stats.parallel import fill_cache
from vit_space.stats.terminals import vit_primitive_set


@pytest.fixture(scope="module")
def items(autoformer_bench):
    return [("autoformer", r["arch"], "c100") for r in autoformer_bench.records[:4]]


@pytest.fixture(scope="module")
def sequential(items, tiny_cfg, tmp_path_factory):
    """The reference: the 4 items extracted in this process, into their own cache."""
    cache = StatsCache(tmp_path_factory.mktemp("sequential"))
    assert fill_cache(cache, items, tiny_cfg, 1, "sequential", progress=False) == 4
    return cache


@pytest.fixture(scope="module")
def cluster():
    """A local dask.distributed cluster of 2 one-thread worker processes (they inherit
    OMP_NUM_THREADS=1), closed whatever happens."""
    from dask.distributed import LocalCluster
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", processes=True,
                               dashboard_address=None)
    try:
        yield cluster
    finally:
        cluster.close()


def assert_same_stats(a, b, where="stats"):
    """Equal structure, equal arrays (dtype, shape and every bit), equal other values."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_stats(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_stats(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert np.array_equal(a, b), where
    else:
        assert a == b, where


def assert_cache_equals(cache, reference, items, cfg):
    for space, arch, dataset in items:
        assert cache.contains(space, arch, dataset, cfg)
        assert_same_stats(cache.get(space, arch, dataset, cfg), reference.get(space, arch, dataset, cfg))
    assert cache.misses == 0 and cache.hits == len(items)  # read back, never recomputed here


# ---------------------------------------------------------------------------- dask and loky

def test_dask_fill_cache_equals_sequential(cluster, items, tiny_cfg, sequential, tmp_path):
    cache = StatsCache(tmp_path / "dask")
    extracted = fill_cache(cache, items, tiny_cfg, 2, "dask", cluster.scheduler_address, progress=False)
    assert extracted == 4
    assert len(list(cache.root.rglob("*.joblib"))) == 4 and not list(cache.root.rglob("*.tmp"))
    assert_cache_equals(StatsCache(cache.root), sequential, items, tiny_cfg)
    # a second fill finds everything cached and never contacts the cluster
    assert fill_cache(cache, items, tiny_cfg, 2, "dask", "tcp://127.0.0.1:1", progress=False) == 0


def test_dask_baseline_scores_equal_sequential(cluster, items, tiny_cfg, tmp_path):
    archs = [arch for _, arch, _ in items[:3]]
    names = ["params", "grad_norm"]
    seq = baseline_scores(names, "autoformer", archs, ["c100"], tiny_cfg, tmp_path / "seq",
                          backend="sequential", progress=False)
    dask = baseline_scores(names, "autoformer", archs, ["c100"], tiny_cfg, tmp_path / "dask",
                           n_jobs=2, backend="dask", scheduler=cluster.scheduler_address, progress=False)
    assert len(list((tmp_path / "dask").rglob("*.joblib"))) == 6  # written by the workers
    for name in names:
        a, b = seq[name]["c100"], dask[name]["c100"]
        assert a.shape == (3,) and np.all(np.isfinite(a)) and np.ptp(a) > 0, (name, a)
        assert np.array_equal(a, b), (name, a, b)


def test_loky_two_jobs_equals_sequential(items, tiny_cfg, sequential, tmp_path, monkeypatch):
    from joblib.externals.loky import get_reusable_executor
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cache = StatsCache(tmp_path / "loky")
    try:
        assert fill_cache(cache, items, tiny_cfg, 2, "loky", progress=False) == 4
    finally:
        get_reusable_executor().shutdown(wait=True)  # don't leave 2 idle workers holding memory
    assert_cache_equals(StatsCache(cache.root), sequential, items, tiny_cfg)


@pytest.mark.parametrize("backend,scheduler,message", [
    ("dask", "nope-address", "--scheduler nope-address: cannot connect (missing port number"),
    ("dask", None, "--backend dask: needs --scheduler ADDRESS"),
    ("spark", None, "--backend spark: expected one of loky, dask, sequential"),
])
def test_bad_backend_or_scheduler_is_bad_input(backend, scheduler, message, items, tiny_cfg, tmp_path):
    """A malformed or missing scheduler address, an unknown backend. (An unreachable scheduler
    costs the 10 s connect timeout: tests/test_errors.py checks it through the real CLI.)"""
    cache = StatsCache(tmp_path / "cache")
    with pytest.raises(BadInput) as info:
        fill_cache(cache, items[:2], tiny_cfg, 2, backend, scheduler, progress=False)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)
    assert not list(tmp_path.rglob("*.joblib"))


# ---------------------------------------------------------------------------- stress

_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def live_rss() -> tuple:
    """(resident bytes after gc and giving freed heap back to the OS, resident bytes as is).
    The first is what the process really holds: glibc keeps freed arenas resident, so the raw
    figure reflects the largest temporaries seen so far, not what is still referenced."""
    page = os.sysconf("SC_PAGE_SIZE")
    raw = int(open("/proc/self/statm").read().split()[1]) * page
    gc.collect()
    if hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)
    return int(open("/proc/self/statm").read().split()[1]) * page, raw


def test_stress_memory(pit_bench, tiny_cfg, session_cache):
    """2000 random trees on 8 tiny PiT archs in one process, the scalar memo bounded to 500
    entries per shape group: memos never exceed it (and do fill), only per-block scalars are kept,
    live memory after a 300-evaluation warm-up grows by < 100 MB, and every fitness is a finite
    JCM in [-1, 1] (-1 = invalid proxy), never NaN."""
    bound, total, warmup = 500, 2000, 300
    records = pit_bench.records[:8]
    table = StatsTable((session_cache.get("pit", r["arch"], "c100", tiny_cfg) for r in records),
                       memo_entries=bound)
    accuracies = [r["c100_kd_acc"] for r in records]
    pset, rng = vit_primitive_set(), random.Random(0)
    valid = largest_memo = 0
    start = None
    for i in range(total):
        tree = generate_tree(pset, 2, 5, rng)
        scores = table.scores(tree)
        value = jcm({"c100_kd_acc": correlations(scores, accuracies)})
        assert isinstance(value, float) and not math.isnan(value), str(tree)
        assert value == WORST or -1.0 <= value <= 1.0, (value, str(tree))
        valid += value != WORST
        sizes = [len(m) for m in table.memos]
        assert max(sizes) <= bound, (i, sizes)
        largest_memo = max(largest_memo, *sizes)
        if i + 1 == warmup:
            start = live_rss()
    end = live_rss()
    assert largest_memo == bound  # the bound was reached, so eviction was exercised
    for (inputs, owner), memo in zip(table.groups, table.memos):
        for key, v in memo.items():
            assert v.dim() == 1 and v.shape[0] == len(owner), key
    growth = end[0] - start[0]
    assert growth < 100 * 2**20, (f"live RSS grew {growth / 2**20:.0f} MB "
                                  f"(raw {start[1] / 2**20:.0f} -> {end[1] / 2**20:.0f} MB)")
    assert valid > total // 2, valid
