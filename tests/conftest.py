"""Shared fixtures: the authors' bench (read in place), tiny statistics settings, a session cache."""
from pathlib import Path

import pytest

from vit_space.data.bench import find_bench, load_bench
from vit_space.stats.cache import StatsCache
from vit_space.stats.statistics import StatsConfig

TINY = StatsConfig(batch_size=4, img_size=32, seed=0)


@pytest.fixture(scope="session")
def bench_dir() -> Path:
    return find_bench("autoformer").parent


@pytest.fixture(scope="session")
def autoformer_bench():
    return load_bench(find_bench("autoformer"), "autoformer")


@pytest.fixture(scope="session")
def pit_bench():
    return load_bench(find_bench("pit"), "pit")


@pytest.fixture(scope="session")
def tiny_cfg() -> StatsConfig:
    return TINY


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> StatsCache:
    """One statistics cache for the whole test session (extraction at 32 px is cheap, not free)."""
    return StatsCache(tmp_path_factory.mktemp("stats_cache"))


@pytest.fixture(scope="session")
def two_arch_items(autoformer_bench, pit_bench, tiny_cfg, session_cache):
    """space -> per-item statistics of the first two archs of each bench on two data sets
    (c100, flowers; 32 px): what the chunked-evaluation tests compare paths on."""
    benches = {"autoformer": autoformer_bench, "pit": pit_bench}
    return {space: [session_cache.get(space, r["arch"], d, tiny_cfg)
                    for r in benches[space].records[:2] for d in ("c100", "flowers")]
            for space in benches}


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models run fastest, and steadily, on one thread; on a shared 2-core machine more
    threads thrash. Restored after the session."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
