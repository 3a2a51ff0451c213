"""On-disk cache of ViT statistics, one joblib file per (space, arch, dataset, config).

Entries are written atomically (temp file + rename) and carry a checksum of their arrays, so an
interrupted write never leaves a half entry and a corrupted one is detected, recomputed and
reported with a warning instead of being used.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Optional

import joblib
import numpy as np

from vit_space.atomic import atomic_dump
from vit_space.statistics import STATS_VERSION, StatsConfig, extract_stats


def default_cache_dir() -> Path:
    return Path(os.environ.get("AUTOPROX_CACHE", Path.home() / ".cache" / "autoprox"))


def _checksum(stats: dict) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for block in stats["blocks"]:
        for name in sorted(block):
            value = block[name]
            digest.update(name.encode())
            digest.update(value.tobytes() if isinstance(value, np.ndarray) else repr(value).encode())
    return digest.hexdigest()


class StatsCache:
    """get() returns the statistics of one (arch, dataset), computing and storing them once."""

    def __init__(self, root: Optional[Path] = None, device: str = "cpu"):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.device = device
        self.hits = self.misses = self.recovered = 0

    def path(self, space: str, arch: dict, dataset: str, cfg: StatsConfig) -> Path:
        return self.root / f"stats-v{STATS_VERSION}" / space / f"{cfg.key(space, arch, dataset)}.joblib"

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
        warnings.warn(f"statistics cache entry {path} is corrupted ({problem}); recomputing")
        self.recovered += 1
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
        return sum(p.stat().st_size for p in self.root.rglob("*.joblib"))
