"""On-disk cache of ViT statistics, one joblib file per (space, arch, dataset, config).

Entries are written atomically (temp file + rename) and carry a checksum of their arrays, so an
interrupted write never leaves a half entry and a corrupted one is detected, recomputed and
reported with a warning instead of being used.

A run reads the same few hundred entries every time, and reading them one by one (joblib's
unpickler, checksums, stacking) took most of a warm run's start. So `stacked()` also keeps, per
(space, settings, list of items), one *stack file*: the items' statistics already stacked
(vit_space.stats.stacking), checked by a CRC-32. The file is mapped copy-on-write rather than
read: its pages already sit in the page cache, while reading it into fresh anonymous memory made
the kernel fault in every page (on the 2-core VM 0.2-7.5 s per 750 MB, nearly all system time,
up to a fifth of a warm run; docs/performance.md). It is derived data: built from the verified
entries when absent, rebuilt with a warning when damaged, and it costs about as much disk as the
entries it stacks. Stack files are only ever replaced by a rename, so a map never changes under
a run.
"""
from __future__ import annotations

import hashlib
import os
import warnings
import zlib
from pathlib import Path
from typing import Optional, Sequence

import joblib
import numpy as np

from vit_space.core.atomic import atomic_dump
from vit_space.models.builders import random_stream
from vit_space.stats.stacking import Stacked, signature, stack_in_place
from vit_space.stats.statistics import STATS_VERSION, StatsConfig, extract_stats

STACK_SUFFIX = ".stack"  # not *.joblib: a stack is no entry


# how joblib maps a stack file's arrays: "c" (copy-on-write: pages shared with the page cache; a
# write would make a private copy, none is made) or None (read into memory, as before)
STACK_MMAP_MODE = "c"


def _read_stack(path: Path) -> dict:
    """The stack file mapped (STACK_MMAP_MODE); read into memory where it cannot be mapped (a
    file system without mmap raises OSError), so such a cache is slower, not rebuilt every run."""
    if STACK_MMAP_MODE is not None:
        try:
            return joblib.load(path, mmap_mode=STACK_MMAP_MODE)
        except OSError:
            pass
    return joblib.load(path)


def default_cache_dir() -> Path:
    return Path(os.environ.get("AUTOPROX_CACHE", Path.home() / ".cache" / "autoprox"))


def _checksum(stats: dict) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for block in stats["blocks"]:
        for name in sorted(block):
            value = block[name]
            digest.update(name.encode())
            # the array's buffer, hashed in place: the same bytes as value.tobytes(), no copy
            digest.update(np.ascontiguousarray(value) if isinstance(value, np.ndarray) else repr(value).encode())
    return digest.hexdigest()


def _stack_checksum(groups: list) -> int:
    """CRC-32 over every array of a stack (several times faster than blake2b on these sizes)."""
    crc = 0
    for group in groups:
        for name in sorted(group):
            crc = zlib.crc32(name.encode(), crc)
            crc = zlib.crc32(np.ascontiguousarray(group[name]), crc)
    return crc


class StatsCache:
    """get() returns the statistics of one (arch, dataset), computing and storing them once."""

    def __init__(self, root: Optional[Path] = None, device: str = "cpu"):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.device = device
        self.hits = self.misses = self.recovered = 0

    def path(self, space: str, arch: dict, dataset: str, cfg: StatsConfig) -> Path:
        return (self.root / f"stats-v{STATS_VERSION}{random_stream(self.device)}" / space
                / f"{cfg.key(space, arch, dataset)}.joblib")

    def _damaged(self, path: Path, problem: str) -> None:
        warnings.warn(f"statistics cache entry {path} is corrupted ({problem}); recomputing")
        self.recovered += 1

    def load(self, path: Path) -> Optional[dict]:
        """The stored stats, or None when absent or damaged (damage gets a warning)."""
        if not path.exists():
            return None
        try:
            entry = joblib.load(path)
            if entry["checksum"] == _checksum(entry["stats"]):
                return entry["stats"]
            problem = "checksum mismatch"
        except Exception as exc:  # a truncated or garbled file can fail in many ways
            problem = f"{type(exc).__name__}: {str(exc)[:80]}"
        self._damaged(path, problem)
        return None

    def get(self, space: str, arch: dict, dataset: str, cfg: StatsConfig) -> dict:
        path = self.path(space, arch, dataset, cfg)
        stats = self.load(path)
        if stats is not None:
            self.hits += 1
            return stats
        self.misses += 1
        stats = extract_stats(space, arch, dataset, cfg, self.device)
        atomic_dump({"checksum": _checksum(stats), "stats": stats}, path)
        return stats

    def contains(self, space: str, arch: dict, dataset: str, cfg: StatsConfig) -> bool:
        return self.path(space, arch, dataset, cfg).exists()

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*")
                   if p.suffix in (".joblib", STACK_SUFFIX) and p.is_file())

    # ------------------------------------------------------------------ stacks

    def stack_path(self, items: Sequence[tuple], cfg: StatsConfig) -> Path:
        """One file per ordered list of (space, arch, dataset) items under one config."""
        keys = "\n".join(cfg.key(*item) for item in items)
        name = hashlib.sha256(keys.encode()).hexdigest()[:32]
        space = items[0][0] if items else "none"
        return (self.root / f"stacks-v{STATS_VERSION}{random_stream(self.device)}" / space
                / f"{name}{STACK_SUFFIX}")

    def stacked(self, items: Sequence[tuple], cfg: StatsConfig) -> Stacked:
        """The statistics of `items` stacked per block-shape group, read from their stack file
        (mapped, see STACK_MMAP_MODE) or built from the entries and stored as one. Building reads
        every entry twice (shapes, then arrays into place) but holds one at a time."""
        items = list(items)
        path = self.stack_path(items, cfg)
        keys = [cfg.key(*item) for item in items]
        stacked = self._load_stack(path, keys)
        if stacked is not None:
            return stacked
        stacked = stack_in_place(len(items), lambda i: self._block_signatures(items[i], cfg),
                                 lambda i: self.get(*items[i], cfg))
        atomic_dump({"keys": keys, "n_items": stacked.n_items, "groups": stacked.groups,
                     "checksum": _stack_checksum(stacked.groups)}, path)
        return stacked

    def _load_stack(self, path: Path, keys: list) -> Optional[Stacked]:
        if not path.exists():
            return None
        try:
            stack = _read_stack(path)
            if stack["keys"] != keys:
                problem = "it stacks other items"
            elif stack["checksum"] != _stack_checksum(stack["groups"]):
                problem = "checksum mismatch"
            else:
                return Stacked(stack["groups"], stack["n_items"])
        except Exception as exc:  # as in load(): damage takes many forms
            problem = f"{type(exc).__name__}: {str(exc)[:80]}"
        self._damaged(path, problem)
        return None

    def _block_signatures(self, item: tuple, cfg: StatsConfig) -> list:
        return [signature(b) for b in self.get(*item, cfg)["blocks"]]
