"""glibc malloc settings for this process: few arenas, freed memory handed back.

glibc gives each new thread its own malloc arena (up to 8 per core) and keeps what was freed in
each one for reuse. torch's worker threads allocate mid-size tensors in their own arenas, so a
default run with two threads held several GB that a one-thread run did not (measured: 10.8 GB
resident against 3.0 GB with MALLOC_ARENA_MAX=2). Importing `vit_space` calls
`limit_malloc_arenas()`, so no user needs an environment variable; elsewhere (macOS, musl) both
functions do nothing.
"""
from __future__ import annotations

import ctypes
import functools
import os

M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)
ARENAS = 2  # the main thread's arena and one shared by all other threads


@functools.lru_cache(maxsize=None)  # called on every tree evaluation: load the library once
def _glibc():
    try:
        return ctypes.CDLL("libc.so.6")  # the name only glibc uses
    except OSError:
        return None


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas (threads then share them); True when the cap was set. An explicit
    MALLOC_ARENA_MAX in the environment wins."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "mallopt") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    return bool(libc.mallopt(M_ARENA_MAX, arenas))


def resident_bytes() -> int:
    """This process's resident size now (Linux: /proc/self/statm), 0 where unknown."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


_resident_after_trim = [0]


def release_freed_memory(grown: int = 0) -> None:
    """Hand memory that malloc holds free back to the OS; with `grown`, only once the resident
    size has grown by that many bytes since the last time. glibc keeps freed heap memory for reuse
    and tensors of changing sizes fragment it: hundreds of extractions, or of tree evaluations on
    stacked statistics, then inflate the resident size by GBs. Trimming costs page faults when the
    memory is needed again, hence the threshold."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return
    if grown > 0 and resident_bytes() - _resident_after_trim[0] < grown:
        return
    libc.malloc_trim(0)
    _resident_after_trim[0] = resident_bytes()
