"""The typed primitive set on its own: every op on edge values, hand-checked values, property
tests on arbitrary floats, random trees, DEAP's own generators, and reuse outside ViTs (a CNN)."""

import math
import os
import random

import numpy as np
import pytest
import torch
from deap import gp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn
import torch.nn.functional as F

from primitives import (FormulaError, Gram, Scalar, TensorType, build_primitive_set, display_name,
                        evaluate_tree, generate_tree, gram_type, parse_formula, tensor_type)
from primitives import ops
from primitives.evaluate import constant_values

W, A = tensor_type("W"), tensor_type("A")
SMALL_TERMINALS = {"w": W, "g": W, "a": A, "n": Scalar}
PROP = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def pset():
    return build_primitive_set(SMALL_TERMINALS)


# ------------------------------------------------------------------ op table and edge inputs

def _row_count(x):
    """Rows of x read as (units, rows, features): every axis between the unit and the last."""
    return math.prod(x.shape[1:-1])


def _gram_of(x):
    r = _row_count(x)
    return torch.ones(x.shape[0], r, r, dtype=x.dtype) * 0.5 + torch.eye(r, dtype=x.dtype)


def call_all_ops(x, y=None):
    """(name, output, expected shape) for every op applied to tensor x (and y of x's shape);
    Grams are row Grams, (units, rows, rows)."""
    y = x.flip(0) if y is None else y
    units = x.shape[0]
    out = []
    for name, fn in ops.ELEMENTWISE_UNARY.items():
        out.append((name, fn(x), x.shape))
    for name, fn in ops.REDUCTIONS.items():
        out.append((name, fn(x), (units,)))
    for name, fn in ops.ELEMENTWISE_BINARY.items():
        out.append((name, fn(x, y), x.shape))
    r = _row_count(x)
    out.append(("gram", ops.gram(x), (units, r, r)))
    out.append(("matmul", ops.matmul(_gram_of(x), x), x.shape))
    out.append(("matmul_gram_of_x", ops.matmul(ops.gram(y), x), x.shape))
    out.append(("matmul_gram_gram", ops.matmul(ops.gram(y), ops.gram(x)), (units, r, r)))
    s, t = x.reshape(units, -1)[:, 0].clone(), y.reshape(units, -1)[:, -1].clone()
    for name, fn in ops.SCALAR_UNARY.items():
        out.append(("scalar_" + name, fn(s), (units,)))
    for name, fn in ops.ELEMENTWISE_BINARY.items():
        out.append(("scalar_" + name, fn(s, t), (units,)))
    return out


ALL_OP_COUNT = (len(ops.ELEMENTWISE_UNARY) + len(ops.REDUCTIONS) + 2 * len(ops.ELEMENTWISE_BINARY)
                + 4 + len(ops.SCALAR_UNARY))

SUBNORMAL = 1e-40  # below float32's smallest normal (1.18e-38), above its smallest subnormal


def _edge_inputs():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(2, 3, 4, generator=g)
    with_nan = base.clone()
    with_nan[0, 1, 2] = float("nan")
    with_inf = base.clone()
    with_inf[1, 0, 0] = float("inf")
    with_inf[1, 2, 3] = float("-inf")
    return {
        "zeros": torch.zeros(2, 3, 4),
        "negatives": -(base.abs() + 0.5),
        "huge": torch.full((2, 3, 4), 1e30),
        "huge_mixed_sign": 1e30 * torch.sign(base),
        "float32_max": torch.full((2, 3, 4), torch.finfo(torch.float32).max),
        "tiny": torch.full((2, 3, 4), 1e-30),
        "subnormal": torch.full((2, 3, 4), SUBNORMAL),
        "one_element": torch.tensor([[0.7]]),
        "one_element_zero": torch.zeros(1, 1),
        "one_unit_4d": base[:1].reshape(1, 3, 2, 2),
        "with_nan": with_nan,
        "with_inf": with_inf,
        "all_nan": torch.full((2, 3, 4), float("nan")),
        "ordinary": base,
        "ordinary_float64": base.double(),
    }


EDGE = _edge_inputs()
# finite inputs on which the protected ops must stay finite
FINITE = ("zeros", "negatives", "huge", "huge_mixed_sign", "float32_max", "tiny", "subnormal",
          "one_element", "one_element_zero", "one_unit_4d", "ordinary", "ordinary_float64")


def test_subnormal_input_is_really_subnormal():
    x = EDGE["subnormal"]
    assert (x > 0).all() and (x < torch.finfo(torch.float32).tiny).all()


@pytest.mark.parametrize("case", sorted(EDGE))
def test_every_op_is_total_on_edge_values(case):
    x = EDGE[case]
    results = call_all_ops(x)
    assert len(results) == ALL_OP_COUNT
    for name, out, shape in results:
        assert isinstance(out, torch.Tensor), name
        assert tuple(out.shape) == tuple(shape), (case, name, out.shape, shape)
        assert out.dtype == x.dtype, (case, name, out.dtype)


@pytest.mark.parametrize("case", FINITE)
def test_protected_ops_are_finite_on_finite_inputs(case):
    x = EDGE[case]
    for name in ("log", "sqrt", "reciprocal"):
        out = ops.ELEMENTWISE_UNARY[name](x)
        assert torch.isfinite(out).all(), (case, name, out)
        out = ops.SCALAR_UNARY[name](x.reshape(x.shape[0], -1)[:, 0])
        assert torch.isfinite(out).all(), (case, "scalar " + name)
    # a / b stays finite for ordinary numerators and any finite denominator, zero and subnormals included
    numerator = torch.linspace(-1e6, 1e6, x.numel(), dtype=x.dtype).reshape(x.shape)
    assert torch.isfinite(ops.div(numerator, x)).all(), case
    # finite inputs of ordinary size keep every op but exp finite
    if case in ("zeros", "negatives", "tiny", "subnormal", "one_element", "one_element_zero",
                "one_unit_4d", "ordinary", "ordinary_float64"):
        for name, out, _ in call_all_ops(x):
            if name not in ("exp", "scalar_exp"):
                assert torch.isfinite(out).all(), (case, name, out)


def test_protected_forms_exact_values():
    z = torch.zeros(1, 3)
    assert torch.allclose(ops.log(z), torch.full((1, 3), math.log(ops.EPS)))
    assert torch.allclose(ops.reciprocal(z), torch.full((1, 3), 1 / ops.EPS))
    assert torch.allclose(ops.reciprocal(torch.tensor([[-0.0]])), torch.tensor([[1 / ops.EPS]]))
    assert torch.allclose(ops.reciprocal(torch.tensor([[-1e-12]])), torch.tensor([[-1 / ops.EPS]]), rtol=1e-3)
    assert torch.allclose(ops.sqrt(torch.tensor([[-4.0, 9.0]])), torch.tensor([[2.0, 3.0]]))
    assert torch.allclose(ops.log(torch.tensor([[-math.e]])), torch.tensor([[1.0]]), atol=1e-6)
    assert torch.allclose(ops.div(torch.tensor([[6.0]]), torch.tensor([[-3.0]])), torch.tensor([[-2.0]]))
    assert torch.allclose(ops.div(torch.tensor([[1.0]]), torch.tensor([[0.0]])), torch.tensor([[1 / ops.EPS]]))
    assert torch.equal(ops.step(torch.tensor([[-1.0, 0.0, 2.0]])), torch.tensor([[0.0, 0.0, 1.0]]))
    assert torch.equal(ops.sign(torch.tensor([[-3.0, 0.0, 2.0]])), torch.tensor([[-1.0, 0.0, 1.0]]))


def test_reductions_hand_computed():
    x = torch.tensor([[[3.0, -4.0]], [[1.0, 1.0]]])  # two units of one row
    assert torch.allclose(ops.frobenius(x), torch.tensor([5.0, math.sqrt(2)]))
    assert torch.allclose(ops.l1(x), torch.tensor([7.0, 2.0]))
    assert torch.allclose(ops.total(x), torch.tensor([-1.0, 2.0]))
    assert torch.allclose(ops.mean(x), torch.tensor([-0.5, 1.0]))
    assert torch.allclose(ops.mean_abs(x), torch.tensor([3.5, 1.0]))
    assert torch.allclose(ops.rms(x), torch.tensor([math.sqrt(12.5), 1.0]))
    assert torch.allclose(ops.std(x), torch.tensor([3.5, 0.0]))  # population std
    assert torch.equal(ops.numel(x), torch.tensor([2.0, 2.0]))
    assert torch.equal(ops.numel(torch.zeros(3, 4, 5, 6)), torch.full((3,), 120.0))


def test_nuclear_and_logdet_gram_match_linear_algebra():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    assert torch.allclose(ops.nuclear(x), torch.linalg.matrix_norm(x, "nuc"))
    x4 = torch.randn(2, 3, 2, 4, generator=g, dtype=torch.float64)  # rows = all but the last axis
    assert torch.allclose(ops.nuclear(x4), torch.linalg.matrix_norm(x4.reshape(2, 6, 4), "nuc"))
    # logdet_gram is on the row side: log det(X Xᵀ / features + eps I), rows x rows
    for xs in (x, x4):
        for u in range(xs.shape[0]):
            m = xs[u].reshape(-1, 4).numpy()
            expect = np.linalg.slogdet(m @ m.T / m.shape[1] + 1e-6 * np.eye(m.shape[0]))[1]
            assert ops.logdet_gram(xs)[u].item() == pytest.approx(expect, rel=1e-9)
    # hand case: X = 2 I (d = rows = 3) -> gram = 4/3 I
    eye2 = (2 * torch.eye(3, dtype=torch.float64)).unsqueeze(0)
    assert ops.logdet_gram(eye2).item() == pytest.approx(3 * math.log(4 / 3 + 1e-6))
    assert ops.nuclear(eye2).item() == pytest.approx(6.0)
    # hand case, 2 rows x 4 features: X Xᵀ / 4 = diag(2/4, 4/4) (the feature side, XᵀX / 2, would
    # be a 4 x 4 matrix of rank 2 with a very different determinant)
    wide = torch.tensor([[[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]]], dtype=torch.float64)
    assert ops.logdet_gram(wide).item() == pytest.approx(math.log(0.5 + 1e-6) + math.log(1 + 1e-6))
    assert ops.nuclear(wide).item() == pytest.approx(math.sqrt(2) + 2)
    # hand case, 3 rows x 1 feature of ones: X Xᵀ = ones(3, 3), eigenvalues 3, 0, 0
    tall = torch.ones(1, 3, 1, dtype=torch.float64)
    assert ops.logdet_gram(tall).item() == pytest.approx(math.log(3 + 1e-6) + 2 * math.log(1e-6))
    assert ops.nuclear(tall).item() == pytest.approx(math.sqrt(3))
    # rank-deficient input: eps keeps logdet finite (4 rows: 4 log eps)
    assert ops.logdet_gram(torch.zeros(1, 4, 4)).item() == pytest.approx(4 * math.log(1e-6), rel=1e-5)
    # a Cholesky that fails marks its unit only, and does not raise: with X all 2^50 (exact in
    # float64) the row Gram is 2^100 * ones, eps vanishes beside it, and the second pivot is 0
    mixed = torch.stack([torch.eye(3, 4, dtype=torch.float64), torch.full((3, 4), 2.0 ** 50, dtype=torch.float64)])
    out = ops.logdet_gram(mixed)
    assert out[0].item() == pytest.approx(3 * math.log(0.25 + 1e-6)) and torch.isnan(out[1])


def test_linear_algebra_marks_only_the_non_finite_unit():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, 3, generator=g)
    x[1, 2, 0] = float("nan")
    x[2, 0, 1] = float("inf")
    for fn in (ops.nuclear, ops.logdet_gram):
        out = fn(x)
        assert torch.isfinite(out[0]) and torch.isnan(out[1]) and torch.isnan(out[2]), fn.__name__
        assert out[0].item() == pytest.approx(fn(x[:1]).item(), rel=1e-5)


def test_normalisations():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 3, 5, generator=g) * 7 + 3
    z = ops.zscore(x).reshape(4, -1)
    assert torch.allclose(z.mean(1), torch.zeros(4), atol=1e-6)
    assert torch.allclose(z.std(1, correction=0), torch.ones(4), atol=1e-5)
    m = ops.minmax_normalize(x).reshape(4, -1)
    assert (m >= 0).all() and (m <= 1).all()
    assert torch.allclose(m.min(1).values, torch.zeros(4)) and torch.allclose(m.max(1).values, torch.ones(4), atol=1e-5)
    s = ops.softmax(x)
    assert (s > 0).all() and torch.allclose(s.sum(-1), torch.ones(4, 3))
    assert torch.allclose(ops.log_softmax(x).exp().sum(-1), torch.ones(4, 3))
    assert torch.allclose(ops.l2_normalize(x).reshape(4, -1).norm(dim=1), torch.ones(4))
    # a constant unit does not divide by zero
    assert torch.isfinite(ops.zscore(torch.ones(1, 3, 3))).all()
    assert torch.isfinite(ops.minmax_normalize(torch.ones(1, 3, 3))).all()
    assert torch.isfinite(ops.l2_normalize(torch.zeros(1, 3, 3))).all()


def test_gram_and_matmul():
    # hand case: one unit, rows (1, 2) and (3, 4): X Xᵀ / 2 = [[5, 11], [11, 25]] / 2
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]], dtype=torch.float64)
    gx = ops.gram(x)
    assert torch.equal(gx, torch.tensor([[[2.5, 5.5], [5.5, 12.5]]], dtype=torch.float64))
    # the Gram mixes the rows: G @ X
    assert torch.equal(ops.matmul(gx, x), torch.tensor([[[19.0, 27.0], [43.0, 61.0]]], dtype=torch.float64))
    assert torch.equal(ops.matmul(gx, gx), gx @ gx)

    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 2, 3, 4, generator=g, dtype=torch.float64)  # 2 units of 6 rows x 4 features
    rows = x.reshape(2, 6, 4)
    gram = ops.gram(x)
    assert gram.shape == (2, 6, 6)
    assert torch.allclose(gram, rows @ rows.transpose(1, 2) / 4)
    assert torch.allclose(gram, gram.transpose(1, 2))
    eye = torch.eye(6, dtype=torch.float64).expand(2, 6, 6)
    assert torch.equal(ops.matmul(eye, x), x)
    b = torch.randn(2, 6, 6, generator=g, dtype=torch.float64)
    out = ops.matmul(b, x)
    assert out.shape == x.shape  # a Gram times a tensor keeps the tensor's shape
    assert torch.allclose(out, torch.einsum("urs,usd->urd", b, rows).reshape(x.shape))
    assert torch.allclose(ops.matmul(b, gram), b @ gram)
    # a tensor with no row axes (units, d) has one row: a 1 x 1 Gram, its mean square
    flat = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    assert torch.equal(ops.gram(flat), torch.tensor([[[12.5]], [[0.5]]]))
    assert torch.equal(ops.matmul(ops.gram(flat), flat), torch.tensor([[37.5, 50.0], [0.5, 0.0]]))


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32 if t.dtype == torch.float32 else torch.int64)


def test_identity_product_is_the_batched_product_bit_for_bit():
    g = torch.Generator().manual_seed(8)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(5, 4, 8, 24, generator=g, dtype=dtype)  # 5 units of 32 rows
        x[x.abs() < 0.1] = -0.0  # the product turns -0 into +0, and so must the shortcut
        x[1, 0, 0, :] = 0.0
        rows = x.reshape(5, 32, 24)
        eye = torch.eye(32, dtype=dtype).expand(5, 32, 32)
        assert torch.equal(_bits(ops.matmul(eye, x)), _bits((eye @ rows).reshape(x.shape)))
        gram = ops.gram(x)
        assert torch.equal(_bits(ops.matmul(eye, gram)), _bits(eye @ gram))
    # inf and NaN go through the product: 0 * inf makes the inf's column NaN in every row
    y = torch.randn(3, 6, 4, generator=g)
    y[1, 2, 3], y[2, 0, 1] = float("inf"), float("nan")
    eye = torch.eye(6).expand(3, 6, 6)
    out = ops.matmul(eye, y)
    assert torch.isnan(out[1, :, 3]).sum() == 5 and torch.isnan(out[2, :, 1]).all()
    assert torch.equal(out, eye @ y) is False and torch.equal(torch.isnan(out), torch.isnan(eye @ y))
    # a stored identity per unit, or a broadcast matrix that is not the identity, multiplies
    scaled = (2 * torch.eye(6)).expand(3, 6, 6)
    assert torch.equal(ops.matmul(scaled, y[:1].expand(3, 6, 4).contiguous())[0], 2 * y[0])
    assert not ops._is_identity(torch.eye(6).repeat(3, 1, 1)) and ops._is_identity(torch.eye(6).expand(3, 6, 6))


def test_identity_safe_statistics_pass_through_the_identity_product():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(4, 3, 5, generator=g)
    assert ops.identity_safe(w) and ops.identity_safe(torch.zeros(2, 3))
    for bad in (-0.0, float("nan"), float("inf"), -float("inf")):
        x = w.clone()
        x[2, 1, 4] = bad
        assert not ops.identity_safe(x), bad
    # as a tree's node: the input itself (no pass over it), the same bits as the product
    tensor_pset = build_primitive_set(SMALL_TERMINALS, ret=W)
    tree = parse_formula("matmul(eye_w, w)", tensor_pset)
    from primitives.evaluate import identity_operands
    assert identity_operands(tree, tensor_pset) == {0: "w"}
    inputs = {"w": w, "g": w, "a": torch.randn(4, 2, 2, 5, generator=g), "n": torch.ones(4)}
    passed = evaluate_tree(tree, tensor_pset, inputs, passed={0: "w"})
    assert passed is inputs["w"]
    assert torch.equal(_bits(passed), _bits(evaluate_tree(tree, tensor_pset, inputs)))
    # only eye_* times an input: a Gram of the input, a computed operand or `g` not declared
    # safe take the op
    for text in ("matmul(gram(w), w)", "matmul(eye_w, neg(w))", "matmul(eye_w, g)"):
        other = parse_formula(text, tensor_pset)
        nodes = {i: name for i, name in identity_operands(other, tensor_pset).items() if name == "w"}
        out = evaluate_tree(other, tensor_pset, inputs, passed=nodes)
        assert out is not inputs["w"] and out is not inputs["g"], text
    scalar_pset = build_primitive_set(SMALL_TERMINALS)
    nested = parse_formula("frobenius(matmul(eye_w, matmul(eye_w, w)))", scalar_pset)
    assert identity_operands(nested, scalar_pset) == {3: "w"}  # the inner product only


@pytest.mark.parametrize("units", [1, ops.GRAM64_UNITS - 1, ops.GRAM64_UNITS, ops.GRAM64_UNITS + 1, 100])
def test_float64_grams_in_chunks_are_the_whole_products_bit_for_bit(units):
    g = torch.Generator().manual_seed(units)
    for rows, features in ((16, 40), (40, 16)):  # MMᵀ smaller, then MᵀM smaller
        m = torch.randn(units, rows, features, generator=g)
        m64 = m.to(torch.float64)
        assert torch.equal(ops._gram64(m), m64 @ m64.transpose(1, 2))
        assert torch.equal(ops._gram64(m, ops._small_gram), ops._small_gram(m64))


def test_safe_denominator_is_the_shift_by_a_where_bit_for_bit():
    g = torch.Generator().manual_seed(10)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(7, 50, generator=g, dtype=dtype) * torch.logspace(-12, 12, 50, dtype=dtype)
        x[0, :8] = torch.tensor([0.0, -0.0, float("nan"), float("inf"), -float("inf"),
                                 ops.EPS, -ops.EPS, -ops.EPS / 2], dtype=dtype)
        expect = x + torch.where(x >= 0, x.new_tensor(ops.EPS), x.new_tensor(-ops.EPS))
        assert torch.equal(_bits(ops._safe_denominator(x)), _bits(expect))


def test_one_pass_finite_check():
    x = torch.randn(4, 3, 5)
    assert ops._all_finite(x)
    for value in (float("inf"), float("-inf"), float("nan")):
        y = x.clone()
        y[2, 1, 1] = value
        assert not ops._all_finite(y)
    # finite values whose float32 sum overflows: answered "not finite", and a linear-algebra
    # reduction then takes the exact path, which finds every unit finite and marks none
    big = torch.full((2, 3, 4), 3e38)
    assert torch.isfinite(big).all() and not ops._all_finite(big)
    out = ops._finite_or_nan(big, lambda m: m.double().sum(dim=(1, 2)))
    assert torch.equal(out, big.double().sum(dim=(1, 2))) and torch.isfinite(out).all()


def test_minmax_normalize_is_min_max_with_indices_bit_for_bit():
    g = torch.Generator().manual_seed(9)
    x = torch.randn(6, 4, 7, generator=g)
    x[1] = 2.5  # a constant unit
    x[2, 0, 0], x[3, 1, 2] = float("nan"), float("inf")
    flat = x.reshape(6, -1)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    expect = ((flat - low) / (high - low + ops.EPS)).reshape(x.shape)
    out = ops.minmax_normalize(x)
    assert torch.equal(torch.isnan(out), torch.isnan(expect))
    same = ~torch.isnan(expect)
    assert torch.equal(_bits(out[same]), _bits(expect[same]))


@pytest.mark.parametrize("features", (1, 7, 240, 15360))
def test_two_pass_float64_std_rounds_to_torchs_welford_std(features, monkeypatch):
    """_std64 (two passes in float64, in pieces) gives torch's own population std bit for bit:
    rows of several scales, offsets (a mean far from zero, up to 1e4 standard deviations), skewed
    and constant rows, rows with an inf or a NaN, and pieces that split the rows. Torch's std is
    asked only for the rows near a rounding boundary or far from their mean, and non-finite ones."""
    g = torch.Generator().manual_seed(features)
    rows = []
    for scale in (1e-6, 1e-2, 1.0, 3e3):
        for offset in (0.0, 1.0, 50.0, 1e4):
            rows.append((torch.randn(40, features, generator=g) + offset) * scale)
    rows.append(torch.rand(40, features, generator=g) ** 8)  # skewed, as after exp or square
    x = torch.cat(rows)
    x[3] = 0.25  # constant
    x[5, 0], x[6, -1], x[7, 0] = float("inf"), float("nan"), float("-inf")
    x[8, :] = float("inf")
    expect, before = x.std(dim=1, correction=0), x.clone()
    asked = []
    torch_std = torch.Tensor.std
    monkeypatch.setattr(torch.Tensor, "std", lambda t, *a, **k: asked.append(len(t)) or torch_std(t, *a, **k))
    for piece_rows in (1, 3, len(x) + 1):
        monkeypatch.setattr(ops, "STD64_BYTES", 8 * features * piece_rows)
        out = ops._std64(x)
        assert out.dtype == x.dtype and torch.equal(out.isnan(), expect.isnan())
        assert torch.equal(_bits(out[~expect.isnan()]), _bits(expect[~expect.isnan()])), piece_rows
    assert _same_bits(ops.std(x.reshape(len(x), 1, features)), ops._std64(x))
    assert torch.equal(x.nan_to_num(7.0), before.nan_to_num(7.0))  # the input is left as it was
    assert 0 < max(asked) < len(x) / 4  # one feature: constant rows, all but the non-finite ours


# ------------------------------------------------------------------ property tests

def _float_arrays(min_units=1):
    shapes = st.tuples(st.integers(min_units, 3), st.integers(1, 4), st.integers(1, 4)).flatmap(
        lambda s: st.sampled_from([s[:1] + (s[2],), s, s[:2] + (2, s[2])]))
    elems = st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True)
    return shapes.flatmap(lambda shape: st.tuples(
        hnp.arrays(np.float32, shape, elements=elems), hnp.arrays(np.float32, shape, elements=elems)))


@PROP
@given(_float_arrays())
def test_property_every_op_is_total_on_arbitrary_floats(pair):
    x, y = (torch.from_numpy(a.copy()) for a in pair)
    for name, out, shape in call_all_ops(x, y):
        assert tuple(out.shape) == tuple(shape), name
        assert out.dtype == torch.float32, name
        assert out.is_floating_point()
    for name in ("sigmoid", "tanh", "sign", "step", "l2_norm"):
        out = ops.ELEMENTWISE_UNARY[name](x)
        ok = torch.isnan(out) | ((out >= -1) & (out <= 1))
        assert ok.all(), name
    for name in ("abs", "sqrt", "relu", "square", "step", "softmax"):
        out = ops.ELEMENTWISE_UNARY[name](x)
        assert (torch.isnan(out) | (out >= 0)).all(), name
    bad_unit = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(1)
    for fn in (ops.nuclear, ops.logdet_gram):
        assert torch.isnan(fn(x)[bad_unit]).all(), fn.__name__


@PROP
@given(_float_arrays())
def test_property_protected_ops_finite_on_moderate_finite_input(pair):
    x = torch.from_numpy(pair[0].copy())
    x = torch.where(torch.isfinite(x), x.clamp(-1e30, 1e30), torch.zeros_like(x))
    for name in ("log", "sqrt", "reciprocal", "abs", "neg", "sigmoid", "tanh", "sign", "step",
                 "relu", "l2_norm", "minmax_norm", "softmax"):
        assert torch.isfinite(ops.ELEMENTWISE_UNARY[name](x)).all(), name
    numerator = torch.from_numpy(np.nan_to_num(pair[1], nan=0.0, posinf=1.0, neginf=-1.0)).clamp(-1e6, 1e6)
    assert torch.isfinite(ops.div(numerator, x)).all()


def _tree_inputs(seed, units, d, special, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    inputs = {"w": torch.randn(units, 3, d, generator=g), "g": torch.randn(units, 3, d, generator=g) * 1e-3,
              "a": torch.randn(units, 2, 2, d, generator=g), "n": torch.rand(units, generator=g) * 100}
    if special == "zeros":
        inputs["g"] = torch.zeros_like(inputs["g"])
    elif special == "nan":
        inputs["w"][0, 0, 0] = float("nan")
    elif special == "inf":
        inputs["a"][-1, -1, -1, -1] = float("inf")
    elif special == "huge":
        inputs["w"] = inputs["w"] * 1e30
    return {k: v.to(dtype) for k, v in inputs.items()}


@PROP
@given(seed=st.integers(0, 2**32 - 1), units=st.integers(1, 3), d=st.integers(1, 4),
       min_depth=st.integers(0, 2), extra=st.integers(0, 3),
       special=st.sampled_from([None, None, "zeros", "nan", "inf", "huge"]))
def test_property_random_trees_evaluate_per_unit(pset, seed, units, d, min_depth, extra, special):
    rng = random.Random(seed)
    tree = generate_tree(pset, min_depth, min_depth + extra, rng)
    assert tree[0].ret is Scalar
    assert min_depth <= tree.height <= min_depth + extra + 1
    out = evaluate_tree(tree, pset, _tree_inputs(seed, units, d, special))
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == (units,), str(tree)
    assert out.dtype == torch.float32
    # with a memo, the same value (memoised subtrees change nothing)
    memo = {}
    again = evaluate_tree(tree, pset, _tree_inputs(seed, units, d, special), memo)
    assert torch.equal(torch.nan_to_num(out, nan=7.0), torch.nan_to_num(again, nan=7.0)), str(tree)


@PROP
@given(seed=st.integers(0, 2**32 - 1), depth=st.integers(1, 6))
def test_property_generated_trees_round_trip(pset, seed, depth):
    tree = generate_tree(pset, 1, depth, random.Random(seed))
    text = str(tree)
    assert ":" not in text
    back = parse_formula(text, pset)
    assert str(back) == text and back == tree
    assert len(back) == len(tree) and all(a is b for a, b in zip(back, tree))


# ------------------------------------------------------------------ the primitive set

def test_pset_has_many_unary_ops_and_readable_names(pset):
    prims = [p for typ in pset.primitives for p in pset.primitives[typ]]
    unary = {display_name(p) for p in prims if p.arity == 1}
    assert len(unary) >= 20, sorted(unary)
    assert {"log", "sqrt", "exp", "frobenius", "nuclear", "logdet_gram", "gram", "zscore"} <= unary
    binary = {display_name(p) for p in prims if p.arity == 2}
    assert binary == {"add", "sub", "mul", "div", "matmul"}
    for p in prims:
        assert ":" not in p.format(*["x"] * p.arity)
    # every type that appears has both a primitive and a terminal; each tensor type has its own
    # Gram type (and no bare Gram)
    WG, AG = gram_type(W), gram_type(A)
    assert issubclass(WG, Gram) and issubclass(AG, Gram) and WG is not AG
    assert (WG.__name__, AG.__name__) == ("WGram", "AGram") and gram_type(W) is WG
    types = set(pset.primitives) | {a for p in prims for a in p.args}
    assert types == {Scalar, W, A, WG, AG}
    for typ in types:
        assert pset.terminals[typ], typ
        assert pset.primitives[typ], typ
    # gram: T -> G_T; matmul: (G_T, T) -> T and (G_T, G_T) -> G_T, never across types
    sig = lambda name: sorted((tuple(t.__name__ for t in p.args), p.ret.__name__)
                              for p in prims if display_name(p) == name)
    assert sig("gram") == [(("A",), "AGram"), (("W",), "WGram")]
    assert sig("matmul") == [(("AGram", "A"), "A"), (("AGram", "AGram"), "AGram"),
                             (("WGram", "W"), "W"), (("WGram", "WGram"), "WGram")]
    # the constants: `one`, and one identity per tensor type named after its first terminal
    consts = {t.value: t.ret for typ in pset.terminals for t in pset.terminals[typ]
              if t.value in ("one", "eye_w", "eye_g", "eye_a", "eye")}
    assert consts == {"one": Scalar, "eye_w": WG, "eye_a": AG}
    assert pset.eye_sources == {"eye_w": "w", "eye_a": "a"}


def test_constant_values_follow_the_rows_of_each_type(pset):
    inputs = _tree_inputs(0, 2, 3, None)  # w, g: (2, 3, 3); a: (2, 2, 2, 3)
    values = constant_values(pset, inputs)
    assert set(values) == {"one", "eye_w", "eye_a"}
    assert torch.equal(values["one"], torch.ones(2))
    assert torch.equal(values["eye_w"], torch.eye(3).expand(2, 3, 3))
    assert torch.equal(values["eye_a"], torch.eye(4).expand(2, 4, 4))  # 2 x 2 row axes: 4 rows
    # the identity Gram leaves its tensor unchanged, and has as many ones as rows
    for text, expect in (("frobenius(matmul(eye_a, a))", ops.frobenius(inputs["a"])),
                         ("sum(eye_w)", torch.full((2,), 3.0)), ("sum(eye_a)", torch.full((2,), 4.0)),
                         ("frobenius(matmul(eye_w, gram(g)))", ops.frobenius(ops.gram(inputs["g"])))):
        assert torch.allclose(evaluate_tree(parse_formula(text, pset), pset, inputs), expect), text


def test_str_prints_display_names(pset):
    text = "add(frobenius(mul(w, g)), mul(n, logdet_gram(matmul(gram(a), a))))"
    tree = parse_formula(text, pset)
    assert str(tree) == text
    inputs = _tree_inputs(0, 2, 3, None)
    out = evaluate_tree(tree, pset, inputs)
    assert out.shape == (2,)
    a = inputs["a"]
    expect = ops.frobenius(inputs["w"] * inputs["g"]) + inputs["n"] * ops.logdet_gram(ops.matmul(ops.gram(a), a))
    assert torch.allclose(out, expect)


def test_pset_rejects_bad_terminals():
    with pytest.raises(TypeError):
        build_primitive_set({"x": int})
    with pytest.raises(ValueError):
        build_primitive_set({"one": Scalar})
    with pytest.raises(ValueError):  # eye_<name> is reserved for the identity Grams
        build_primitive_set({"eye_w": W})
    with pytest.raises(TypeError):  # Gram types are made by the set, not given as terminals
        build_primitive_set({"x": gram_type(W)})
    with pytest.raises(ValueError):
        build_primitive_set({"not an id": Scalar})
    assert issubclass(W, TensorType) and tensor_type("W") is W


@pytest.mark.parametrize("generator", [gp.genHalfAndHalf, gp.genFull, gp.genGrow])
def test_deap_generators_work_with_the_set(pset, generator):
    random.seed(12345)
    inputs = _tree_inputs(5, 2, 3, None)
    for _ in range(40):
        tree = gp.PrimitiveTree(generator(pset, 1, 4))
        assert tree[0].ret is Scalar
        text = str(tree)
        assert ":" not in text
        back = parse_formula(text, pset)
        assert str(back) == text and all(a is b for a, b in zip(back, tree))
        assert evaluate_tree(tree, pset, inputs).shape == (2,)


def test_parse_formula_rejects_wrong_root_and_types(pset):
    with pytest.raises(FormulaError):
        parse_formula("w", pset)
    with pytest.raises(FormulaError):
        parse_formula("mul(w, a)", pset)
    with pytest.raises(FormulaError, match="does not type-check"):
        parse_formula("frobenius(gram(eye_w))", pset)  # no gram of a Gram
    with pytest.raises(FormulaError, match="does not type-check"):
        parse_formula("frobenius(matmul(gram(w), a))", pset)  # a Gram mixes rows of its own type only
    with pytest.raises(FormulaError, match="does not type-check"):
        parse_formula("frobenius(matmul(w, gram(w)))", pset)  # Gram first: G @ X
    with pytest.raises(FormulaError, match="does not type-check"):
        parse_formula("frobenius(add(eye_w, eye_a))", pset)
    with pytest.raises(FormulaError, match="unknown terminal"):
        parse_formula("frobenius(eye)", pset)


# ------------------------------------------------------------------ reuse outside ViTs

class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(*[nn.Conv2d(8, 8, 3, padding=1) for _ in range(3)])
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = F.relu(self.stem(x))
        for conv in self.body:
            x = F.relu(conv(x))
        return self.head(x.mean(dim=(2, 3)))


def test_readme_example_cnn_layers_scored_by_a_tree():
    """Scoring the conv layers of a small CNN, outside any ViT: layers of one shape are the units
    of one evaluation; a layer of another shape is evaluated as its own unit batch."""
    torch.manual_seed(0)
    net = SmallCNN()
    images, labels = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    F.cross_entropy(net(images), labels).backward()

    Weight = tensor_type("ConvWeight")
    cnn_pset = build_primitive_set({"w": Weight, "g": Weight, "n": Scalar})

    def as_units(convs):
        w = torch.stack([c.weight.detach().reshape(c.weight.shape[0], -1) for c in convs])
        g = torch.stack([c.weight.grad.reshape(c.weight.shape[0], -1) for c in convs])
        return {"w": w, "g": g, "n": torch.tensor([float(c.weight.numel()) for c in convs])}

    body = as_units(list(net.body))  # 3 layers, each (8, 72): one batch of 3 units
    stem = as_units([net.stem])  # (8, 27): a unit batch of its own
    assert body["w"].shape == (3, 8, 72) and stem["w"].shape == (1, 8, 27)

    # a known formula: SNIP per layer
    snip = parse_formula("l1(mul(w, g))", cnn_pset)
    per_layer = evaluate_tree(snip, cnn_pset, body)
    expect = torch.stack([(c.weight * c.weight.grad).abs().sum() for c in net.body]).detach()
    assert torch.allclose(per_layer, expect, rtol=1e-5)
    assert evaluate_tree(snip, cnn_pset, stem).item() == pytest.approx(
        (net.stem.weight * net.stem.weight.grad).abs().sum().item(), rel=1e-5)
    grad_norm = parse_formula("mul(rms(g), sqrt(n))", cnn_pset)
    assert torch.allclose(evaluate_tree(grad_norm, cnn_pset, body),
                          torch.stack([c.weight.grad.norm() for c in net.body]), rtol=1e-5)

    # generated trees: one score per layer; the network's score is the sum over layers
    rng = random.Random(7)
    for _ in range(10):
        tree = generate_tree(cnn_pset, 2, 4, rng)
        scores = evaluate_tree(tree, cnn_pset, body)
        assert scores.shape == (3,)
        assert evaluate_tree(tree, cnn_pset, stem).shape == (1,)
        network_score = float(scores.sum() + evaluate_tree(tree, cnn_pset, stem).sum())
        assert isinstance(network_score, float)

    # units are independent: a layer alone gets the value it gets in the batch
    for text in ("l1(mul(w, g))", "nuclear(w)", "logdet_gram(matmul(gram(g), w))",
                 "frobenius(matmul(eye_w, matmul(gram(w), gram(g))))",
                 "mul(frobenius(zscore(w)), n)", "std(softmax(mul(w, g)))"):
        tree = parse_formula(text, cnn_pset)
        scores = evaluate_tree(tree, cnn_pset, body)
        for u in range(3):
            alone = evaluate_tree(tree, cnn_pset, {k: v[u:u + 1] for k, v in body.items()})
            assert torch.allclose(alone, scores[u:u + 1], rtol=1e-4), text


@pytest.mark.parametrize("case", sorted(EDGE))
def test_ops_leave_their_inputs_untouched(case):
    """Ops work in place only on tensors they made: the statistics they read stay as they were."""
    x = EDGE[case].clone()
    y = x.flip(0).clone()
    before_x, before_y = x.clone(), y.clone()
    call_all_ops(x, y)
    assert torch.equal(x.nan_to_num(7.0), before_x.nan_to_num(7.0)), case
    assert torch.equal(y.nan_to_num(7.0), before_y.nan_to_num(7.0)), case


def _same_bits(a, b):
    """NaN in the same places, every other value the same, -0.0 told from +0.0. A NaN's sign
    bit is left out: no op reads it (sign, step and the masks map any NaN alike), and x86 keeps
    the first operand's, so b + a may differ there from a + b."""
    nan = a.isnan()
    return torch.equal(nan, b.isnan()) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0)) \
        and torch.equal(torch.signbit(a) & ~nan, torch.signbit(b) & ~nan)


@pytest.mark.parametrize("case", sorted(EDGE))
def test_fast_forms_equal_the_plain_definitions_bit_for_bit(case):
    """The in-place and fused forms (fewer temporaries) must give exactly the textbook formulas."""
    x, eps = EDGE[case], ops.EPS
    flat = x.reshape(x.shape[0], -1)
    plain_denominator = torch.where(x >= 0, x + eps, x - eps)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    mean, std = flat.mean(dim=1, keepdim=True), flat.std(dim=1, keepdim=True, correction=0)
    plain = {
        "log": torch.log(x.abs() + eps), "sqrt": torch.sqrt(x.abs()),
        "reciprocal": 1.0 / plain_denominator,
        "minmax_norm": ((flat - low) / (high - low + eps)).reshape(x.shape),
        "zscore": ((flat - mean) / (std + eps)).reshape(x.shape),
        "step": (x > 0).to(x.dtype),
    }
    for name, expected in plain.items():
        assert _same_bits(ops.ELEMENTWISE_UNARY[name](x), expected), (case, name)
    assert _same_bits(ops._safe_denominator(x), plain_denominator), case
    assert _same_bits(ops.div(x.flip(0), x), x.flip(0) / plain_denominator), case
    wide = x.double()  # another dtype
    shared = x[:1].expand(3, *x.shape[1:])  # units sharing memory: a mask must go to fresh memory
    for y in (wide, shared):
        assert _same_bits(ops.step(y), (y > 0).to(y.dtype)), case
        assert _same_bits(ops._safe_denominator(y), torch.where(y >= 0, y + eps, y - eps)), case


# ------------------------------------------------------------------ cheaper paths, same bits

@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_linear_algebra_split_over_threads_gives_the_serial_bits(two_threads, monkeypatch):
    """A batch large enough to be split over torch's threads gets the values of one matrix at a
    time (the same LAPACK call per matrix), NaN units included."""
    batches = []
    for name in ("eigvalsh", "cholesky_ex"):
        fn = getattr(torch.linalg, name)
        monkeypatch.setattr(torch.linalg, name, (lambda f: lambda m: batches.append(len(m)) or f(m))(fn))
    g = torch.Generator().manual_seed(3)
    x = torch.randn(ops.SPLIT_BATCH_FROM + 37, 6, 9, generator=g)
    x[5, 0, 0] = float("nan")
    x[-1, 2, 3] = float("inf")
    x[40] = 2.0 ** 50  # a failing Cholesky in the second part
    for fn in (ops.nuclear, ops.logdet_gram):
        split = fn(x)
        one_by_one = torch.cat([fn(x[i:i + 1]) for i in range(len(x))])
        assert _same_bits(split, one_by_one), fn.__name__
        assert torch.isnan(split[[5, -1]]).all() and torch.isfinite(split[:5]).all(), fn.__name__
    assert torch.isnan(ops.logdet_gram(x)[40]) and torch.isfinite(ops.nuclear(x)[40])
    assert max(batches) == (len(x) + 1) // 2  # it was split, in two parts


def test_numel_reads_only_its_arguments_shape(pset):
    """numel(subtree) is computed from the subtree on the first unit only (the other units are
    never touched) and equals numel of the whole subtree's value, invalid units included."""
    inputs = _tree_inputs(4, 5, 3, "nan")
    w, a = inputs["w"], inputs["a"]
    cases = {  # formula: (its value computed in full, units the watched ops may see)
        "numel(w)": (ops.numel(w), set()),
        "numel(sqrt(log(w)))": (ops.numel(ops.sqrt(ops.log(w))), {1}),
        "numel(matmul(gram(a), sub(a, exp(a))))": (ops.numel(ops.matmul(ops.gram(a), a - ops.exp(a))), {1}),
        "add(numel(gram(w)), std(sqrt(w)))": (ops.numel(ops.gram(w)) + ops.std(ops.sqrt(w)), {1, 5}),
        "numel(matmul(eye_w, eye_w))": (torch.full((5,), 9.0), set()),
    }
    context = dict(pset.context)
    for formula, (full, units) in cases.items():
        seen = set()
        for name, fn in context.items():
            if callable(fn) and name.startswith(("sqrt:", "exp:", "gram:")):
                pset.context[name] = (lambda f: lambda *args: seen.add(args[0].shape[0]) or f(*args))(fn)
        try:
            got = evaluate_tree(parse_formula(formula, pset), pset, inputs)
        finally:
            pset.context.update(context)
        assert _same_bits(got, full), formula
        assert seen == units, (formula, seen)


def _split_in_child(g, ref, queue):
    queue.put(torch.equal(ops._per_matrix(torch.linalg.eigvalsh, g), ref))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_threads_for_the_split(two_threads):
    """A child forked after the parent split a batch (DEAP's map over a fork Pool, say) inherits
    the thread pool without its threads: it must start its own, not wait forever."""
    import multiprocessing
    g = torch.randn(ops.SPLIT_BATCH_FROM * 2, 6, 6, dtype=torch.float64)
    g = g @ g.transpose(1, 2)
    ref = ops._per_matrix(torch.linalg.eigvalsh, g)  # the parent's pool has its threads now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_split_in_child, args=(g, ref, queue))
    child.start()
    child.join(60)
    hung = child.is_alive()
    if hung:
        child.kill()
    assert not hung and child.exitcode == 0 and queue.get(timeout=5)


OWNING_OPS = {name: fn for table in (ops.ELEMENTWISE_UNARY, ops.REDUCTIONS, ops.ELEMENTWISE_BINARY)
              for name, fn in table.items() if getattr(fn, "takes_own", False)}


def test_the_cheap_ops_take_own():
    """The ops whose fresh output costs most beside their arithmetic may write over their
    argument (softmax and the linear algebra make their own temporaries)."""
    assert {"abs", "neg", "exp", "square", "sign", "step", "sqrt", "log", "reciprocal", "l1",
            "mean_abs", "rms", "add", "sub", "mul", "div", "zscore"} <= set(OWNING_OPS)


@pytest.mark.parametrize("case", sorted(EDGE))
def test_owned_forms_give_the_same_bits_and_write_only_their_first_argument(case):
    x = EDGE[case]
    y = x.flip(0).clone()
    for name, fn in OWNING_OPS.items():
        args = (x, y) if name in ops.ELEMENTWISE_BINARY else (x,)
        expected = fn(*args)
        mine, before_y = x.clone(), y.clone()
        got = fn(mine, *args[1:], own=True)
        assert _same_bits(got, expected), (case, name)
        assert _same_bits(y, before_y), (case, name)  # the second argument is only read
        if name in ops.ELEMENTWISE_UNARY or name in ops.ELEMENTWISE_BINARY:
            assert got.data_ptr() == mine.data_ptr(), (case, name)  # written where it was handed
    for name in ("add", "mul"):  # commutative: the evaluator may hand them over swapped
        assert getattr(OWNING_OPS[name], "commutative", False)
        assert _same_bits(OWNING_OPS[name](y.clone(), x, own=True), OWNING_OPS[name](x, y)), case


@pytest.mark.parametrize("case", sorted(EDGE))
def test_every_op_returns_memory_of_its_own(case):
    """An evaluator hands an op's result to the next op to write over, so no op may return its
    input or a view of it."""
    x = EDGE[case].clone()
    y = x.flip(0).clone()
    inputs = {x.untyped_storage().data_ptr(), y.untyped_storage().data_ptr()}
    for name, out, _ in call_all_ops(x, y):
        assert out.untyped_storage().data_ptr() not in inputs, (case, name)


@pytest.mark.parametrize("seed", range(12))
def test_in_place_evaluation_gives_the_same_bits_and_keeps_inputs_and_memo(pset, seed):
    """Only intermediates that nothing else holds are written over: every memo entry stays
    the value of its formula, and the inputs stay as they were."""
    from vit_space.scoring.table import ScalarMemo
    rng = random.Random(seed)
    reuse = ["l1(w)", "neg(l1(w))", "abs(neg(l1(w)))", "add(l1(w), mean(exp(w)))",
             "mul(mean(exp(w)), neg(mean(exp(w))))", "sum(add(exp(w), neg(exp(w))))"]
    for special in (None, "zeros", "nan", "inf", "huge"):
        inputs = _tree_inputs(seed, 3, 4, special)
        before = {k: v.clone() for k, v in inputs.items()}
        memo = ScalarMemo()
        trees = [parse_formula(text, pset) for text in reuse]
        for tree in trees + [generate_tree(pset, 1, 5, rng) for _ in range(6)]:
            fresh = evaluate_tree(tree, pset, inputs, memo)
            assert _same_bits(fresh, evaluate_tree(tree, pset, inputs, in_place=False)), str(tree)
            for key, value in memo.items():
                expected = evaluate_tree(parse_formula(key, pset), pset, inputs, in_place=False)
                assert _same_bits(value, expected), (str(tree), key)
            assert all(_same_bits(inputs[k], v) for k, v in before.items()), str(tree)


def test_an_op_that_returns_its_input_is_not_written_over():
    """A user's op may return its argument (or a view of it): the evaluator then hands nothing
    over, and the inputs stay as they were."""
    pset = build_primitive_set({"x": W})
    pset.addPrimitive(lambda x: x, [W], W, name="same")
    pset.addPrimitive(lambda x: x[:, :1], [W], W, name="first_row")
    x = torch.randn(2, 3, 4)
    before = x.clone()
    for text, expected in (("sum(neg(same(x)))", -x.sum(dim=(1, 2))),
                           ("sum(exp(first_row(x)))", x[:, :1].exp().sum(dim=(1, 2)))):
        out = evaluate_tree(parse_formula(text, pset), pset, {"x": x})
        assert torch.equal(x, before), text
        assert torch.allclose(out, expected), text
