"""primitives.rewrite: every rule gives the original's bits on every kind of float, the rules
fire where they should, and StatsTable's scores are the same with and without them."""

import random

import numpy as np
import pytest
import torch
from deap import gp

from primitives import (Scalar, build_primitive_set, display_name, evaluate_tree, generate_tree,
                        parse_formula)
from primitives import ops
from primitives.rewrite import simplify
from primitives.types import gram_type, tensor_type
from vit_space.scoring.table import StatsTable
from vit_space.stats.terminals import vit_primitive_set

Probe = tensor_type("RewriteProbe")


def special_units() -> torch.Tensor:
    """(9, 3, 4, 6) float32: one unit each of plain values, signed zeros, subnormals, values
    whose squares overflow, infinities, NaN, all -0.0, all +0.0, and a mix of everything."""
    g = torch.Generator().manual_seed(0)
    shape = (3, 4, 6)
    plain = torch.randn(shape, generator=g)
    units = [plain, plain.where(plain.abs() > 0.5, torch.tensor(-0.0)).where(plain > -1, 0.0),
             plain * 1e-40, plain * 3e30, plain.where(plain.abs() < 1.2, torch.tensor(float("inf")))
             * plain.sign(), plain.where(plain.abs() < 1.5, torch.tensor(float("nan"))),
             torch.full(shape, -0.0), torch.zeros(shape)]
    specials = torch.tensor([0.0, -0.0, 1e-45, -1e-40, 1e-30, 88.0, -104.0, 3e38, -3e38,
                             float("inf"), float("-inf"), float("nan"), 1.0, -1.0, 0.5, 2.0])
    units.append(specials[torch.randint(len(specials), shape, generator=g)])
    return torch.stack(units)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """NaN where the other is NaN (its sign bit aside), every other value the same bits,
    -0.0 and +0.0 told apart."""
    nan = torch.isnan(a)
    return (a.shape == b.shape and torch.equal(nan, torch.isnan(b))
            and torch.equal(a[~nan].view(torch.int32), b[~nan].view(torch.int32)))


@pytest.fixture(scope="module")
def probe_psets():
    """The probe's primitive set once per type a tree may return (parse_formula checks it)."""
    return {ret: build_primitive_set({"x": Probe, "s": Scalar}, name="REWRITE_PROBE", ret=ret)
            for ret in (Scalar, Probe, gram_type(Probe))}


@pytest.fixture(scope="module")
def probe_pset(probe_psets):
    return probe_psets[Scalar]


@pytest.fixture(scope="module")
def probe_inputs():
    x = special_units()
    return {"x": x, "s": x.reshape(len(x), -1)[:, 5]}


def unary_pairs(pset):
    """(outer(inner(arg)), outer's type) for every pair of one-argument ops that chain by type,
    over the terminals `x`, its Gram and `s`, whatever the rules say of them."""
    unary = [p for prims in pset.primitives.values() for p in prims if p.arity == 1]
    for inner in unary:
        for outer in unary:
            if outer.args[0] is inner.ret:
                arg = {"Scalar": "s", "RewriteProbe": "x"}.get(inner.args[0].__name__, "gram(x)")
                yield f"{display_name(outer)}({display_name(inner)}({arg}))", outer.ret


def test_every_rule_gives_the_original_bits(probe_psets, probe_inputs):
    fired = []
    for text, ret in unary_pairs(probe_psets[Scalar]):
        probe_pset = probe_psets[ret]
        tree = parse_formula(text, probe_pset)
        simpler = simplify(tree, probe_pset)
        if simpler is tree:
            continue
        fired.append(str(tree))
        assert len(simpler) <= len(tree) and str(simpler) != str(tree)
        assert same_bits(evaluate_tree(simpler, probe_pset, probe_inputs),
                         evaluate_tree(tree, probe_pset, probe_inputs)), f"{tree} -> {simpler}"
    # every table of the module fires on some pair, for tensors, Grams and Scalars
    for example in ("abs(exp(x))", "relu(relu(x))", "sign(step(x))", "sqrt(step(x))",
                    "neg(neg(x))", "nuclear(neg(x))", "l1(neg(x))", "step(sign(x))",
                    "mean_abs(softmax(x))", "abs(neg(s))", "l1(sigmoid(gram(x)))",
                    "std(neg(gram(x)))"):
        assert example in fired, example


@pytest.mark.parametrize("text, expected", [
    ("mean_abs(sqrt(step(sign(x))))", "mean(step(x))"),
    ("l1(relu(step(square(relu(x)))))", "sum(step(square(relu(x))))"),
    ("nuclear(square(neg(neg(neg(x)))))", "nuclear(square(x))"),
    ("add(abs(neg(s)), frobenius(abs(neg(x))))", "add(abs(s), frobenius(x))"),
    ("logdet_gram(matmul(eye_x, neg(neg(x))))", "logdet_gram(matmul(eye_x, x))"),
])
def test_rules_apply_bottom_up_until_none_does(probe_pset, probe_inputs, text, expected):
    tree = parse_formula(text, probe_pset)
    simpler = simplify(tree, probe_pset)
    assert str(simpler) == expected
    assert same_bits(evaluate_tree(simpler, probe_pset, probe_inputs),
                     evaluate_tree(tree, probe_pset, probe_inputs))


def test_a_tree_without_redundant_ops_is_returned_as_is(probe_pset):
    for text in ("sum(x)", "std(zscore(neg(x)))", "l1(relu(x))", "sum(abs(sign(x)))", "one"):
        tree = parse_formula(text, probe_pset)
        assert simplify(tree, probe_pset) is tree


@pytest.mark.parametrize("space, seed", [("autoformer", 3), ("pit", 4)])
def test_table_scores_are_the_same_with_and_without_rewriting(two_arch_items, space, seed):
    pset, rng = vit_primitive_set(), random.Random(seed)
    trees = [generate_tree(pset, 2, 5, rng) for _ in range(60)]
    assert sum(simplify(t, pset) is not t for t in trees) >= 10  # the rules do fire here
    rewriting = StatsTable(two_arch_items[space], chunk_units=7, workers=1)
    literal = StatsTable(two_arch_items[space], chunk_units=7, workers=1, simplify=False)
    for tree in trees:
        np.testing.assert_array_equal(rewriting.scores(tree), literal.scores(tree),
                                      err_msg=str(tree))


def test_a_set_without_the_cheaper_reduction_keeps_the_original():
    """A user's set built by hand may lack `sum` or `mean`: the rule then does not apply."""
    pset = gp.PrimitiveSetTyped("HAND_MADE", [Probe], Scalar)
    pset.renameArguments(ARG0="x")
    pset.addPrimitive(ops.l1, [Probe], Scalar, name="l1:RewriteProbe")
    pset.addPrimitive(ops.exp, [Probe], Probe, name="exp:RewriteProbe")
    tree = gp.PrimitiveTree([pset.mapping["l1:RewriteProbe"], pset.mapping["exp:RewriteProbe"],
                             pset.terminals[Probe][0]])
    assert simplify(tree, pset) is tree
