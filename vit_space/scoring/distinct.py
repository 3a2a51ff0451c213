"""Units that repeat across items, found once so that a tree reading only them runs once per
distinct unit.

An item is an (arch, data set) pair, and an arch's weights at initialisation do not depend on the
data set: the default AutoFormer search split holds each weight unit three times (891 units of
the first group, 297 distinct). Every op acts within one unit, so a tree that reads only such
statistics gives the repeated units the same values bit for bit; the table evaluates it on the
distinct units and copies the values back out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

# a statistic counts as repeated when a group holds at most this share of distinct units
REPEATED_SHARE = 0.75
# values per unit whose bits sort the units first: units that differ there are distinct, and
# those that agree are compared whole against their class's first unit
PREFIX = 64


@dataclass(frozen=True)
class DistinctUnits:
    """`fields`: the statistics repeated in every group. Per group, `first[g]`: the first unit of
    each class of units equal in all of `fields`; `inverse[g]`: each unit's class."""
    fields: frozenset
    first: list
    inverse: list


def _bits(x: torch.Tensor) -> torch.Tensor:
    """x's units as rows of integers with x's bits: equal rows are equal bit for bit (a NaN's
    payload and a zero's sign included), which float comparison would not say."""
    flat = x.reshape(len(x), -1).contiguous()
    return flat.view({1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[x.element_size()])


def _classes(rows: torch.Tensor) -> torch.Tensor:
    """Each row's class among equal rows (torch.unique over whole rows; empty rows are all
    equal)."""
    if rows.shape[1] == 0:
        return torch.zeros(len(rows), dtype=torch.long, device=rows.device)
    return torch.unique(rows, dim=0, return_inverse=True)[1]


def _first_of(inverse: torch.Tensor) -> torch.Tensor:
    """The first unit of each class."""
    count = int(inverse.max()) + 1 if len(inverse) else 0
    units = torch.arange(len(inverse), device=inverse.device)
    return torch.full((count,), len(inverse), device=inverse.device).scatter_reduce_(
        0, inverse, units, "amin")


def _joint_classes(inputs: dict, prefix: dict) -> tuple:
    """(each unit's class, each class's first unit) among units equal in every statistic of
    `prefix` (name -> classes by the first PREFIX values), bit for bit: each unit is compared
    whole with its class's first unit, and a class that is not equal throughout is split by a
    sort on whole rows."""
    labels = torch.stack(list(prefix.values()), dim=1)
    inverse = _classes(labels)
    first = _first_of(inverse)
    for f in prefix:
        rows = _bits(inputs[f])
        if not bool((rows == rows[first[inverse]]).all()):
            labels = torch.cat([labels, _classes(rows).unsqueeze(1)], dim=1)
            inverse = _classes(labels)
            first = _first_of(inverse)
    return inverse, first


def find_distinct_units(groups: list, share: float = REPEATED_SHARE) -> Optional[DistinctUnits]:
    """The statistics that repeat across the units of every group (at most `share` of each
    group's units distinct, judged on their first PREFIX values) and the classes of units equal
    in all of them; None where no statistic repeats or the classes would save too little."""
    if not groups:
        return None
    prefixes = [{f: _classes(_bits(x)[:, :PREFIX]) for f, x in inputs.items() if len(x)}
                for inputs, _ in groups]
    fields = set.intersection(*({f for f, classes in prefix.items()
                                 if int(classes.max()) + 1 <= share * len(classes)}
                                for prefix in prefixes))
    if not fields:
        return None
    joint = [_joint_classes(inputs, {f: classes for f, classes in prefix.items() if f in fields})
             for (inputs, _), prefix in zip(groups, prefixes)]
    inverse, first = [classes for classes, _ in joint], [firsts for _, firsts in joint]
    if sum(map(len, first)) > share * sum(map(len, inverse)):
        return None
    return DistinctUnits(frozenset(fields), first, inverse)
