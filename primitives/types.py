"""Types of the typed primitive set.

Every value carries a leading *unit* axis (a unit is whatever one evaluation is made for: a
transformer block, a CNN layer, one sample...), so one call evaluates a tree on many units at once.
Tensor types are shape classes: two values of the same tensor type always have the same shape,
which is what lets element-wise binary ops combine them safely. All tensors of one unit share
their last (feature) axis, so every tensor type maps to the same `Gram` (features x features).
"""
from __future__ import annotations


class Scalar:
    """One number per unit: shape (units,)."""


class TensorType:
    """Base of tensor shape classes: shape (units, ..., features)."""


class Gram(TensorType):
    """Second-moment matrix over the feature axis: shape (units, features, features)."""


_made: dict = {}


def tensor_type(name: str) -> type:
    """The tensor shape class called `name` (created once, so the same name is the same type)."""
    if name not in _made:
        _made[name] = type(name, (TensorType,), {"__doc__": f"Tensor shape class {name}."})
    return _made[name]
