"""Arch dicts <-> gene lists: the encoding the search's operators work on.

Candidates are bench-format arch dicts, so anything found can be built, ranked or written to
JSON like a bench record; per-block lists become one gene per possible block.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Optional

from vit_space.core.errors import BadInput
from vit_space.data.spaces import get_space

def plain(arch: dict) -> dict:
    """A plain-dict deep copy (individuals are dict subclasses; the cache and JSON want dicts)."""
    return {k: list(v) if isinstance(v, list) else v for k, v in arch.items()}


def decode(space: str, genome: list) -> dict:
    """Gene values -> a valid arch; per-block lists longer than an integer depth are cut to it."""
    arch: dict = {}
    for (field, index, _), value in zip(get_space(space).genes(), genome):
        if index is None:
            arch[field] = value
        else:
            arch.setdefault(field, []).append(value)
    if isinstance(arch.get("depth"), int):
        for field, value in arch.items():
            if isinstance(value, list):
                arch[field] = value[:arch["depth"]]
    return get_space(space).validate(arch)


def try_decode(space: str, genome: list) -> Optional[dict]:
    """decode(), or None for gene combinations the space forbids (e.g. PiT heads that shrink)."""
    try:
        return decode(space, genome)
    except BadInput:
        return None


def encode(space: str, arch: dict, rng: random.Random) -> list:
    """Arch -> gene values; positions past the depth get random choices (they are inactive)."""
    genome = []
    for field, index, choices in get_space(space).genes():
        if index is None:
            genome.append(arch[field])
        else:
            values = arch[field]
            genome.append(values[index] if index < len(values) else rng.choice(choices))
    return genome


def active_genes(space: str, arch: dict) -> list:
    """Positions of the genes that change `arch` when changed."""
    return [i for i, (field, index, _) in enumerate(get_space(space).genes())
            if index is None or index < len(arch[field])]


def smallest_arch(space: str) -> dict:
    """Every gene at its smallest choice: the cheapest arch (cost grows with every gene)."""
    return decode(space, [min(choices) for _, _, choices in get_space(space).genes()])


def load_arch(path, space: str) -> dict:
    """A JSON arch record ({"arch": {...}} or the bare dict), validated against the space."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadInput(f"{path}: cannot be read ({exc.strerror})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: not JSON ({str(exc)[:80]})") from None
    where = str(path)
    if isinstance(data, dict) and "arch" in data:
        data, where = data["arch"], f"{path} field arch"
    return get_space(space).validate(data, where=where)
