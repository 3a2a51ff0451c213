"""Where results go. Output paths are checked before any work and created only by the first write
(vit_space.core.atomic creates the parent directory), so bad input never leaves an empty folder behind;
a run's folder is never silently reused by another run."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Optional

from vit_space.core.errors import BadInput


def check_writable_dir(path, flag: str) -> Path:
    """Refuse a directory that could not be created or written, creating nothing: the directory
    itself, else its nearest existing parent, must be a writable directory."""
    out = Path(path)
    probe = out
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    if probe.is_dir():
        if not os.access(probe, os.W_OK | os.X_OK):
            problem = "directory is not writable" if probe == out else \
                "cannot create directory (Permission denied)"
            raise BadInput(f"{flag} {path}: {problem}")
        return out
    # what mkdir would say: the path itself is a file, or a file stands where a parent should be
    reason = "File exists" if probe == out else "Not a directory"
    raise BadInput(f"{flag} {path}: cannot create directory ({reason})")


def check_writable_file(path, flag: str) -> Path:
    out = Path(path)
    if out.is_dir():  # else the work is done first and the final rename fails with a traceback
        raise BadInput(f"{flag} {path}: is a directory (expected a file path)")
    check_writable_dir(str(out.parent) if str(out.parent) else ".", flag)
    return out


def run_files(folder: Path, names: Iterable[str]) -> list:
    """The names among `names` that `folder` already holds."""
    return [n for n in names if (folder / n).exists()]


def _series(default: Path) -> dict:
    """number -> folder of the default series: DEFAULT is 1, DEFAULT-N is N."""
    found = {1: default}
    if default.parent.is_dir():
        pattern = re.compile(re.escape(default.name) + r"-([0-9]+)")
        for p in default.parent.iterdir():
            m = pattern.fullmatch(p.name)
            if m and int(m.group(1)) >= 2:
                found[int(m.group(1))] = p
    return found


def run_dir(out: Optional[str], default: str, names: Iterable[str], resume: bool = False,
            force: bool = False, flag: str = "--out") -> Path:
    """The folder of a run that writes the files `names`. Without `out`: a fresh folder of the
    series DEFAULT, DEFAULT-2, DEFAULT-3, ... (numbered after every one that holds a run), or with
    `resume` the newest that holds one. An explicit `out` that holds another run's files is
    refused unless `resume` (continue it) or `force` (overwrite it). Nothing is created here."""
    names = list(names)
    if out is None:
        series = _series(Path(default))
        used = sorted(n for n, p in series.items() if run_files(p, names))
        if resume:
            chosen = series[used[-1]] if used else Path(default)
        else:
            n = used[-1] + 1 if used else 1
            chosen = Path(default) if n == 1 else Path(f"{default}-{n}")
        return check_writable_dir(chosen, flag)
    held = run_files(Path(out), names)
    if held and not (resume or force):
        raise BadInput(f"{flag} {out}: holds another run ({', '.join(held)}); pass --resume to "
                       f"continue it or --force to overwrite it, or use a new {flag}")
    return check_writable_dir(out, flag)
