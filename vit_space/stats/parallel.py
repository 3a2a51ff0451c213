"""Fill the statistics cache in parallel through joblib, on local processes or a dask cluster.

Extraction (one forward/backward per arch and data set) is the expensive part and embarrassingly
parallel; joblib gives it a pluggable backend: 'loky' (local processes) or 'dask' (a
dask.distributed scheduler at `scheduler`, through joblib's dask backend). Workers write cache
entries; the caller then reads them, so results are identical whatever ran them.
"""
from __future__ import annotations

import contextlib
from typing import Optional, Sequence

import joblib
from tqdm.auto import tqdm

from vit_space.core.errors import BadInput
from vit_space.core.malloc import release_freed_memory

BACKENDS = ("loky", "dask", "sequential")


def _extract_one(cache, space, arch, dataset, cfg, threads: int) -> int:
    import torch
    if threads:
        torch.set_num_threads(threads)
    cache.get(space, arch, dataset, cfg)
    release_freed_memory()
    return 1


@contextlib.contextmanager
def backend_context(backend: str, scheduler: Optional[str]):
    if backend not in BACKENDS:
        raise BadInput(f"--backend {backend}: expected one of {', '.join(BACKENDS)}")
    if backend != "dask":
        yield
        return
    if not scheduler:
        raise BadInput("--backend dask: needs --scheduler ADDRESS (a dask.distributed scheduler)")
    from dask.distributed import Client
    try:
        client = Client(scheduler, timeout="10s")
    except (OSError, TimeoutError, ValueError) as exc:  # ValueError: a malformed address
        raise BadInput(f"--scheduler {scheduler}: cannot connect ({str(exc)[:80]})") from None
    try:
        with joblib.parallel_config(backend="dask"):
            yield
    finally:
        client.close()


def run_parallel(fn, tasks: Sequence[tuple], n_jobs: int, backend: str, scheduler: Optional[str],
                 desc: str, progress: bool) -> list:
    """fn(*task) for each task, in order, with a progress bar, on the chosen joblib backend."""
    if not tasks:
        return []
    if backend == "sequential" or (n_jobs == 1 and backend == "loky"):
        return [fn(*t) for t in tqdm(tasks, desc=desc, disable=not progress, unit="item")]
    with backend_context(backend, scheduler):
        kwargs = {"n_jobs": n_jobs, "return_as": "generator"} if backend == "loky" else {"return_as": "generator"}
        results = joblib.Parallel(**kwargs)(joblib.delayed(fn)(*t) for t in tasks)
        return list(tqdm(results, total=len(tasks), desc=desc, disable=not progress, unit="item"))


def fill_cache(cache, items: Sequence[tuple], cfg, n_jobs: int = 1, backend: str = "loky",
               scheduler: Optional[str] = None, progress: bool = True, label: str = "") -> int:
    """Extract the statistics of the (space, arch, dataset) items missing from the cache; `label`
    says in the progress bar which items these are (e.g. "search split")."""
    missing = [(cache, s, a, d, cfg, 1 if n_jobs != 1 else 0) for s, a, d in items
               if not cache.contains(s, a, d, cfg)]
    desc = f"statistics ({label})" if label else "extract statistics"
    run_parallel(_extract_one, missing, n_jobs, backend, scheduler, desc, progress)
    return len(missing)
