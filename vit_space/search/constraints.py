"""Budgets on the full-size model and the budget-aware operators that keep candidates within them.

Budgets are checked on the model's true size (224 px by default) with the analytic counts of
vit_space.models.costs; a candidate over budget is never scored.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Optional

from vit_space.core.errors import BadInput
from vit_space.data.spaces import arch_key, get_space
from vit_space.models.costs import arch_cost
from vit_space.search.genes import active_genes, encode, plain, smallest_arch, try_decode

@dataclass(frozen=True)
class Constraints:
    """A parameter / FLOP budget on the full-size model (img_size, num_classes of the data set)."""
    max_params: Optional[float] = None
    max_flops: Optional[float] = None
    img_size: int = 224
    num_classes: int = 100

    def cost(self, space: str, arch: dict) -> tuple:
        return arch_cost(space, arch, self.img_size, self.num_classes)

    def fits(self, space: str, arch: dict) -> bool:
        try:
            params, flops = self.cost(space, arch)
        except BadInput:  # unbuildable: never a candidate
            return False
        return ((self.max_params is None or params <= self.max_params)
                and (self.max_flops is None or flops <= self.max_flops))

    def check_feasible(self, space: str) -> None:
        """BadInput when even the smallest arch of the space is over budget."""
        for flag, limit in (("--max-params", self.max_params), ("--max-flops", self.max_flops)):
            if limit is not None and not (limit > 0 and math.isfinite(limit)):
                raise BadInput(f"{flag} {limit:g}: expected a positive number")
        params, flops = self.cost(space, smallest_arch(space))
        for flag, limit, value, unit in (("--max-params", self.max_params, params, "params"),
                                         ("--max-flops", self.max_flops, flops, "FLOPs")):
            if limit is not None and value > limit:
                raise BadInput(f"{flag} {limit:g}: no architecture of the {space} space fits "
                               f"(smallest has {value} {unit})")



def mutate_arch(space: str, arch: dict, rng: random.Random, constraints: Constraints,
                max_tries: int = 50) -> dict:
    """Resample one active gene to another choice; retry until within budget, else keep the arch."""
    genes = get_space(space).genes()
    active = active_genes(space, arch)
    for _ in range(max_tries):
        genome = encode(space, arch, rng)
        i = rng.choice(active)
        others = [c for c in genes[i][2] if c != genome[i]]
        if others:
            genome[i] = rng.choice(others)
        child = try_decode(space, genome)
        if child is not None and constraints.fits(space, child):
            return child
    return plain(arch)


def crossover_archs(space: str, a: dict, b: dict, rng: random.Random, constraints: Constraints,
                    max_tries: int = 50, swap: float = 0.5) -> tuple:
    """Uniform crossover over the genes; retry until both children are within budget, else
    return copies of the parents."""
    for _ in range(max_tries):
        ga, gb = encode(space, a, rng), encode(space, b, rng)
        for i in range(len(ga)):
            if rng.random() < swap:
                ga[i], gb[i] = gb[i], ga[i]
        ca, cb = try_decode(space, ga), try_decode(space, gb)
        if ca is not None and cb is not None and constraints.fits(space, ca) and constraints.fits(space, cb):
            return ca, cb
    return plain(a), plain(b)


def sample_fitting(space: str, rng: random.Random, constraints: Constraints, n: int,
                   max_attempts: Optional[int] = None) -> list:
    """Up to n distinct uniform samples within budget (bounded attempts). If none is found, the
    smallest arch (feasible by check_feasible) stands in, so a search always has a candidate."""
    found, seen = [], set()
    for _ in range(max_attempts or max(1000, 100 * n)):
        arch = get_space(space).sample(rng)
        key = arch_key(arch)
        if key in seen or not constraints.fits(space, arch):
            continue
        seen.add(key)
        found.append(arch)
        if len(found) == n:
            break
    return found or [smallest_arch(space)]
