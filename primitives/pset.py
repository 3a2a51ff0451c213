"""Build a DEAP `PrimitiveSetTyped` from a mapping of terminal names to types.

Each op is registered once per type it applies to, under an internal name `op:Type` (DEAP needs
unique names), while the printed name is just `op`, so `str(tree)` reads as the formula. The types
make every generated tree valid: element-wise binary ops only meet operands of one shape class.
Constant terminals are always present: `one` (Scalar) and, per tensor type, `eye_<name>` (the
identity of that type's Gram, named after its first terminal), so that every type has a terminal
and DEAP's own generators (genFull, genGrow, genHalfAndHalf) work.
"""
from __future__ import annotations

from typing import Mapping

from deap import gp

from primitives import ops
from primitives.types import Gram, Scalar, TensorType, gram_type


def _add(pset, fn, in_types, ret_type, display):
    internal = f"{display}:{'.'.join(t.__name__ for t in in_types)}"
    pset.addPrimitive(fn, list(in_types), ret_type, name=internal)
    prim = pset.primitives[ret_type][-1]
    prim.seq = prim.seq.replace(internal + "(", display + "(", 1)


def build_primitive_set(terminals: Mapping[str, type], name: str = "PROXY",
                        ret: type = Scalar) -> gp.PrimitiveSetTyped:
    """Typed primitive set over `terminals` (name -> Scalar or a `tensor_type(...)` class)."""
    for term, typ in terminals.items():
        if typ is not Scalar and not (isinstance(typ, type) and issubclass(typ, TensorType)
                                      and not issubclass(typ, Gram)):
            raise TypeError(f"terminal {term!r}: type {typ!r} is neither Scalar nor a tensor_type")
        if term == "one" or term.startswith("eye_") or not term.isidentifier():
            raise ValueError(f"terminal name {term!r} is reserved or not an identifier")
    tensor_types = list(dict.fromkeys(t for t in terminals.values() if t is not Scalar))
    first = {t: next(n for n, u in terminals.items() if u is t) for t in tensor_types}
    eyes = {f"eye_{first[t]}": gram_type(t) for t in tensor_types}
    names = list(terminals) + ["one"] + list(eyes)
    types = list(terminals.values()) + [Scalar] + list(eyes.values())
    pset = gp.PrimitiveSetTyped(name, types, ret)
    pset.renameArguments(**{f"ARG{i}": n for i, n in enumerate(names)})
    pset.eye_sources = {eye: first[t] for eye, t in zip(eyes, tensor_types)}

    def shape_keeping(typ):
        for op_name, fn in ops.ELEMENTWISE_UNARY.items():
            _add(pset, fn, [typ], typ, op_name)
        for op_name, fn in ops.ELEMENTWISE_BINARY.items():
            _add(pset, fn, [typ, typ], typ, op_name)
        for op_name, fn in ops.REDUCTIONS.items():
            _add(pset, fn, [typ], Scalar, op_name)

    for typ in tensor_types:
        g = gram_type(typ)
        shape_keeping(typ)
        _add(pset, ops.gram, [typ], g, "gram")
        _add(pset, ops.matmul, [g, typ], typ, "matmul")
        shape_keeping(g)
        _add(pset, ops.matmul, [g, g], g, "matmul")
    for op_name, fn in ops.SCALAR_UNARY.items():
        _add(pset, fn, [Scalar], Scalar, op_name)
    for op_name, fn in ops.ELEMENTWISE_BINARY.items():
        _add(pset, fn, [Scalar, Scalar], Scalar, op_name)
    return pset


def display_name(prim: gp.Primitive) -> str:
    return prim.name.split(":", 1)[0]
