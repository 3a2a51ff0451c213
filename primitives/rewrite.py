"""Rewrite a tree into one that computes the same values bit for bit with fewer passes.

GP trees carry ops that do nothing to what reaches them (`abs(exp(x))`, `step(step(x))`) or that
the op above cannot see (`sqrt(neg(x))`: the `sqrt` primitive takes |x| first). Each such op is a
full pass over a tensor as large as the statistics, so an evaluator drops them before it starts.
Every rule below holds element by element for every float, zeros of either sign, infinities and
NaN included (NaN stays NaN; only its sign bit may differ, and no op reads that), as
tests/test_rewrite.py checks op by op, so a rewritten tree's scores are the original's bits.
Rules are tables keyed by the ops' printed names (`primitives.ops`), for any tensor or Scalar
type that has the ops.
"""
from __future__ import annotations

from deap import gp

from primitives.pset import display_name

# ops whose every result is +0.0, positive or NaN (never -0.0): sqrt takes |x| first, exp and
# sigmoid round their smallest values to +0.0, minmax_norm subtracts the minimum (x - x = +0.0)
NONNEGATIVE = frozenset({"abs", "sqrt", "exp", "sigmoid", "softmax", "step", "square",
                         "minmax_norm"})
# op -> ops whose results it returns unchanged: op(inner(x)) is inner(x)
LEAVES_UNCHANGED = {
    "abs": NONNEGATIVE,
    "relu": NONNEGATIVE | {"relu"},  # relu(-0.0) is -0.0, so relu's results are not NONNEGATIVE
    "sign": frozenset({"sign", "step"}),  # results in {-1, 0, 1} and {0, 1}
    "step": frozenset({"step"}),
    "sqrt": frozenset({"step"}),  # sqrt(0) = 0, sqrt(1) = 1
    "square": frozenset({"step"}),
}
# op -> ops it sees through: op(inner(x)) is op(x)
SEES_THROUGH = {
    # even functions: they read |x| or x·x, and (-a)·(-b) = a·b exactly (Grams, eigenvalues)
    **{op: frozenset({"abs", "neg"}) for op in ("abs", "square", "sqrt", "log", "l1", "mean_abs",
                                                "frobenius", "rms")},
    **{op: frozenset({"neg"}) for op in ("gram", "nuclear", "logdet_gram", "std")},
    "step": frozenset({"sign", "relu"}),  # x > 0 exactly where sign(x) > 0 or relu(x) > 0
}
# op -> its own inverse: op(op(x)) is x
INVOLUTIONS = frozenset({"neg"})
# reduction -> the reduction it equals on NONNEGATIVE values (their |x| is x)
ON_NONNEGATIVE = {"l1": "sum", "mean_abs": "mean"}


def simplify(tree: gp.PrimitiveTree, pset: gp.PrimitiveSetTyped) -> gp.PrimitiveTree:
    """`tree` with the rules above applied bottom-up until none applies (the same values, bit
    for bit); `tree` itself where nothing applies."""
    nested, _ = _nest(tree, 0)
    nodes = _flatten(_rewrite(nested, pset), [])
    return tree if len(nodes) == len(tree) and all(a is b for a, b in zip(nodes, tree)) \
        else gp.PrimitiveTree(nodes)


def _nest(tree, index: int):
    """(node, [children]) of the subtree at `index`, and where it ends."""
    node, children, index = tree[index], [], index + 1
    for _ in range(node.arity if isinstance(node, gp.Primitive) else 0):
        child, index = _nest(tree, index)
        children.append(child)
    return (node, children), index


def _flatten(nested, out: list) -> list:
    node, children = nested
    out.append(node)
    for child in children:
        _flatten(child, out)
    return out


def _rewrite(nested, pset):
    node, children = nested
    children = [_rewrite(child, pset) for child in children]
    while isinstance(node, gp.Primitive) and node.arity == 1 \
            and isinstance(children[0][0], gp.Primitive):
        op, inner = display_name(node), children[0]
        inner_op = display_name(inner[0])
        if inner_op in LEAVES_UNCHANGED.get(op, ()):
            return inner
        if op in INVOLUTIONS and inner_op == op:
            return inner[1][0]
        if inner_op in SEES_THROUGH.get(op, ()):
            children = [inner[1][0]]
            continue
        cheaper = _on_nonnegative(node, inner_op, pset)
        if cheaper is None:
            break
        node = cheaper
    return node, children


def _on_nonnegative(node, inner_op: str, pset):
    """The reduction that `node` equals on `inner_op`'s results, of the same type, if the set
    has it (`build_primitive_set` registers every reduction for every tensor type)."""
    op = display_name(node)
    if op not in ON_NONNEGATIVE or inner_op not in NONNEGATIVE or ":" not in node.name:
        return None
    return pset.mapping.get(f"{ON_NONNEGATIVE[op]}:{node.name.split(':', 1)[1]}")
