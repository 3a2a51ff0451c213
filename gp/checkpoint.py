"""Checkpoints as checksummed JSON, written atomically (temp file + rename).

JSON rather than pickle: a checkpoint is data (formulas, numbers, RNG states), and loading one
never runs code. A checksum catches a damaged file, which is then a clear error, not a resume
from garbage.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from vit_space.core.atomic import write_json_atomic
from vit_space.core.errors import BadInput


def _digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def save_checkpoint(path: Path, payload: dict) -> None:
    write_json_atomic(path, {"sha256": _digest(payload), "payload": payload})


def load_checkpoint(path: Path) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
        payload = data["payload"]
        ok = data["sha256"] == _digest(payload)
    except FileNotFoundError:
        raise BadInput(f"--resume: no checkpoint at {path}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"{path}: damaged checkpoint ({type(exc).__name__}); delete it or use a new --out") from None
    if not ok:
        raise BadInput(f"{path}: damaged checkpoint (checksum mismatch); delete it or use a new --out")
    return payload


def rng_state_to_json(state) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def rng_state_from_json(data) -> tuple:
    version, internal, gauss = data
    return (version, tuple(internal), gauss)
