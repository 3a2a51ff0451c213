"""glibc malloc settings for this process: few arenas, large tensors reused, freed memory handed back.

glibc gives each new thread its own malloc arena (up to 8 per core) and keeps what was freed in
each one for reuse. torch's worker threads allocate mid-size tensors in their own arenas, so a
default run with two threads held several GB that a one-thread run did not (measured: 10.8 GB
resident against 3.0 GB with MALLOC_ARENA_MAX=2).

A tree evaluation allocates temporaries as large as the stacked statistics (tens of MB each).
glibc serves anything above 32 MB with a fresh mmap, which the kernel must zero page by page on
first touch: about a quarter of a warm search's CPU time went to the kernel. Raising the mmap
threshold keeps them on the heap, where freed blocks are reused, and torch's THP_MEM_ALLOC_ENABLE
aligns them to 2 MB huge pages, so what is still faulted in comes 512 pages at a time.
`release_freed_memory` bounds the heap that this keeps.

Importing `vit_space` calls `configure_malloc()`, so no user needs an environment variable (one
that is set wins); elsewhere (macOS, musl) these functions do nothing.
"""
from __future__ import annotations

import ctypes
import functools
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's mallopt numbers (malloc.h)
ARENAS = 2  # the main thread's arena and one shared by all other threads
# above every tensor a tree makes on the bench's statistics (the largest stacked group is ~45 MB);
# trimming is left to release_freed_memory
MMAP_THRESHOLD = 2**30


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


def keep_large_blocks(threshold: int = MMAP_THRESHOLD) -> bool:
    """Serve allocations up to `threshold` bytes from the heap, where a freed one is reused
    without new page faults, and stop glibc's own trimming; True when set. An explicit
    MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_ wins."""
    libc = _glibc()
    if (libc is None or not hasattr(libc, "mallopt")
            or {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ)):
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, threshold))


def configure_malloc() -> None:
    """What importing vit_space does: the arena cap, large blocks kept, and torch's huge-page
    allocation for tensors of 2 MB and more (read by torch at its first large allocation)."""
    limit_malloc_arenas()
    if keep_large_blocks():
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


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
