"""The two ViT search spaces of ViT-Bench-101: their choices, validation and uniform samplers.

Each space is a small object in a registry, so a new space is one entry, not another if-branch.
An architecture is the bench's own record format (a plain dict), never a custom class, so records
read from the bench, sampled, mutated or written to JSON are the same thing.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass

from vit_space.core.errors import BadInput


def arch_key(arch: dict) -> str:
    """A stable text form of an arch record (sorted keys, floats as written) for hashing and seeds."""
    return json.dumps(arch, sort_keys=True, separators=(",", ":"))


def arch_seed(space: str, arch: dict) -> int:
    """Seed derived from the record, so an arch has the same initial weights in every run and data set."""
    digest = hashlib.sha256(f"{space}|{arch_key(arch)}".encode()).hexdigest()
    return int(digest[:8], 16)


@dataclass(frozen=True)
class AutoFormerSpace:
    """AutoFormer-Ti subnets: one width, a depth, and per-block MLP ratio and head count."""

    name: str = "autoformer"
    hidden_dim: tuple = (192, 216, 240)
    depth: tuple = (12, 13, 14)
    mlp_ratio: tuple = (3.5, 4.0)
    num_heads: tuple = (3, 4)

    def validate(self, arch: dict, where: str = "arch") -> dict:
        _check_fields(arch, ("hidden_dim", "depth", "mlp_ratio", "num_heads"), where)
        _check_choice(arch["hidden_dim"], self.hidden_dim, f"{where}.hidden_dim")
        _check_choice(arch["depth"], self.depth, f"{where}.depth")
        for key, choices in (("mlp_ratio", self.mlp_ratio), ("num_heads", self.num_heads)):
            values = arch[key]
            if not isinstance(values, list) or len(values) != arch["depth"]:
                raise BadInput(f"{where}.{key}: expected a list of length depth={arch['depth']}, "
                               f"got {_short(values)}")
            for i, v in enumerate(values):
                _check_choice(v, choices, f"{where}.{key}[{i}]")
        return arch

    def sample(self, rng: random.Random) -> dict:
        depth = rng.choice(self.depth)
        return {"hidden_dim": rng.choice(self.hidden_dim), "depth": depth,
                "mlp_ratio": [rng.choice(self.mlp_ratio) for _ in range(depth)],
                "num_heads": [rng.choice(self.num_heads) for _ in range(depth)]}

    def genes(self) -> list:
        """Per-position choices for gene-wise search: width, depth, then per-block ratio and heads
        for the deepest setting (positions past the depth are ignored)."""
        deepest = max(self.depth)
        return ([("hidden_dim", None, self.hidden_dim), ("depth", None, self.depth)]
                + [("mlp_ratio", i, self.mlp_ratio) for i in range(deepest)]
                + [("num_heads", i, self.num_heads) for i in range(deepest)])


@dataclass(frozen=True)
class PiTSpace:
    """PiT subnets: a base width, one MLP ratio, and per-stage depth and head count (3 stages)."""

    name: str = "pit"
    base_dim: tuple = (16, 24, 32, 40)
    mlp_ratio: tuple = (2, 4, 6, 8)
    depth: tuple = ((1, 2, 3), (4, 6, 8), (2, 4, 6))
    num_heads: tuple = ((2, 4, 8), (2, 4, 8), (2, 4, 8))

    def validate(self, arch: dict, where: str = "arch") -> dict:
        _check_fields(arch, ("base_dim", "mlp_ratio", "depth", "num_heads"), where)
        _check_choice(arch["base_dim"], self.base_dim, f"{where}.base_dim")
        _check_choice(arch["mlp_ratio"], self.mlp_ratio, f"{where}.mlp_ratio")
        for key, choices in (("depth", self.depth), ("num_heads", self.num_heads)):
            values = arch[key]
            if not isinstance(values, list) or len(values) != 3:
                raise BadInput(f"{where}.{key}: expected a list of 3 stages, got {_short(values)}")
            for i, v in enumerate(values):
                _check_choice(v, choices[i], f"{where}.{key}[{i}]")
        heads = arch["num_heads"]
        for i in range(2):
            if heads[i + 1] % heads[i]:
                raise BadInput(f"{where}.num_heads[{i + 1}]: {heads[i + 1]} is not a multiple of "
                               f"num_heads[{i}] = {heads[i]} (PiT's pooling widens each stage by an "
                               "integer factor)")
        return arch

    def head_choices(self) -> list:
        """The buildable head triples: each stage's heads a multiple of the previous stage's."""
        a, b, c = self.num_heads
        return [[x, y, z] for x in a for y in b for z in c if y % x == 0 and z % y == 0]

    def sample(self, rng: random.Random) -> dict:
        return {"base_dim": rng.choice(self.base_dim), "mlp_ratio": rng.choice(self.mlp_ratio),
                "depth": [rng.choice(c) for c in self.depth],
                "num_heads": list(rng.choice(self.head_choices()))}

    def genes(self) -> list:
        return ([("base_dim", None, self.base_dim), ("mlp_ratio", None, self.mlp_ratio)]
                + [("depth", i, c) for i, c in enumerate(self.depth)]
                + [("num_heads", i, c) for i, c in enumerate(self.num_heads)])


SPACES = {"autoformer": AutoFormerSpace(), "pit": PiTSpace()}


def get_space(name: str):
    try:
        return SPACES[name]
    except KeyError:
        raise BadInput(f"--space {name}: unknown space (expected one of {', '.join(SPACES)})") from None


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_fields(arch, names, where):
    if not isinstance(arch, dict):
        raise BadInput(f"{where}: expected an object with fields {', '.join(names)}, got {_short(arch)}")
    for name in names:
        if name not in arch:
            raise BadInput(f"{where}: missing field '{name}' (expected {', '.join(names)})")
    extra = sorted(set(arch) - set(names))
    if extra:
        raise BadInput(f"{where}: unknown field '{extra[0]}' (expected {', '.join(names)})")


def _check_choice(value, choices, where):
    # integer choices (widths, depths, head counts) take ints only: 4.0 would pass `in` but
    # crash the model builder and hash (arch_key/arch_seed) differently from 4
    kinds = int if all(isinstance(c, int) for c in choices) else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value not in choices:
        raise BadInput(f"{where}: {_short(value)} is outside the space (expected one of "
                       f"{', '.join(str(c) for c in choices)})")
