"""Types of the typed primitive set.

Every value carries a leading *unit* axis (a unit is whatever one evaluation is made for: a
transformer block, a CNN layer, one sample...), so one call evaluates a tree on many units at once.
Tensor types are shape classes: two values of the same tensor type always have the same shape,
which is what lets element-wise binary ops combine them safely. A tensor is read as a batch of
matrices (rows x features), rows being all axes between the unit and the last; each tensor type T
has its own Gram type, the rows x rows similarity matrix X Xᵀ / features. Row-side Grams keep
Gram ops cheap: rows are what a sketch keeps few of, while features (the model width) are many.
"""
from __future__ import annotations


class Scalar:
    """One number per unit: shape (units,)."""


class TensorType:
    """Base of tensor shape classes: shape (units, ..., features)."""


class Gram(TensorType):
    """Base of the Gram types: shape (units, rows, rows)."""


_made: dict = {}


def tensor_type(name: str) -> type:
    """The tensor shape class called `name` (created once, so the same name is the same type)."""
    if name not in _made:
        _made[name] = type(name, (TensorType,), {"__doc__": f"Tensor shape class {name}."})
    return _made[name]


def gram_type(of: type) -> type:
    """The Gram type of tensor type `of` (created once per tensor type)."""
    name = f"{of.__name__}Gram"
    if name not in _made:
        _made[name] = type(name, (Gram,), {"__doc__": f"Row Gram matrix of {of.__name__} values."})
    return _made[name]
