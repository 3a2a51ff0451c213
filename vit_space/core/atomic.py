"""Atomic file writes: write a temp file beside the target, flush it to disk, rename it over.

A crash or kill at any moment leaves either the old file or the new one, never half of one.
The file gets the mode any newly created file would get (0666 less the umask): mkstemp's private
0600 would make results unreadable to the user's group.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Callable


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it (Linux: /proc/self/status); elsewhere set and
    restored at once, under a lock."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def atomic_write(path, write: Callable[[str], None]) -> None:
    """`write(tmp_name)` writes the content; it then replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, 0o666 & ~current_umask())
        finally:
            os.close(fd)
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(path, data) -> None:
    def write(name):
        with open(name, "w") as f:
            json.dump(data, f, indent=1)
    atomic_write(path, write)


def atomic_dump(obj, path) -> None:
    """joblib.dump, atomically."""
    import joblib
    atomic_write(path, lambda name: joblib.dump(obj, name))


def torch_save_atomic(obj, path) -> None:
    import torch
    atomic_write(path, lambda name: torch.save(obj, name))
