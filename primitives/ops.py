"""The primitive operations, as plain batched torch functions.

Each op is total: it never raises on finite or non-finite input. A result that is NaN or inf is
simply returned, and the evaluator marks the unit (and so the architecture) invalid. Protected
forms (log|x|, sqrt|x|, division by x+eps) keep ordinary inputs such as exact zeros valid.
Reductions map (units, ...) to (units,); `gram` maps (units, rows..., d) to (units, rows, rows).
An op may work in place only on a tensor it made itself (its inputs may be the statistics), and
it returns a tensor it made, never an input or a view of one. An op marked `takes_own` accepts
`own=True`: the caller hands its first argument over, and the op may write its result there
(the same values; into fresh memory the cheap ops take twice the time: one thread, an activation
chunk, `abs` 0.30 against 0.15 ms). A `commutative` binary op may be handed its arguments the
other way round.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import torch

EPS = 1e-8
# torch runs a batched CPU eigvalsh or Cholesky one matrix after another on one core whatever its
# thread count (891 Grams of 64 x 64: 111 ms with 1 or 2 threads); a batch of at least this many
# matrices is split over torch's threads instead: each matrix goes through the same LAPACK call,
# so the values are the same bits (2 Python threads: 57 ms)
SPLIT_BATCH_FROM = 64
# units per float64 Gram product in `nuclear` and `logdet_gram` (default AutoFormer groups, two
# threads, the products alone: 32 units took 0.6-1.0x the time of whole groups; see _gram64)
GRAM64_UNITS = 32
# float64 bytes per piece of `_std64`: a piece's copy stays in a core's L2 cache (one thread, a
# 68 x 15 360 activation chunk: 1 MiB pieces 1.5 ms against 2.5 ms at once, before the guard;
# with it 2.4 ms, torch's own std 7.9 ms)
STD64_BYTES = 2**20


def _units(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def _safe_denominator(x: torch.Tensor, own: bool = False) -> torch.Tensor:
    """x + EPS where x >= 0, else x - EPS (NaN stays NaN). The shift is made in place from the
    mask, 2·EPS·[x >= 0] - EPS (both steps exact), at half the time of a `where` over two
    broadcast constants, with the same bits (tests/test_primitives.py); `own`: into x."""
    shift = _mask(torch.ge, x).mul_(2 * EPS).sub_(EPS)
    return x.add_(shift) if own else x + shift


def _mask(compare, x: torch.Tensor, own: bool = False) -> torch.Tensor:
    """compare(x, 0) as 1.0/0.0 in x's dtype, written straight into a tensor of that dtype (x
    itself if `own`): a quarter of the time of a boolean mask converted afterwards, the same
    values."""
    return compare(x, 0, out=x if own else torch.empty_like(x))


def takes_own(fn):
    """Mark `fn` as accepting `own=True` (see the module's docstring)."""
    fn.takes_own = True
    return fn


def _rows(x: torch.Tensor) -> torch.Tensor:
    """View as a batch of matrices (units, rows, features)."""
    return x.reshape(x.shape[0], -1, x.shape[-1])


@lru_cache(maxsize=None)
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, thread_name_prefix="primitives-lapack")


# a forked child (multiprocessing's default on Linux, e.g. DEAP's map over a Pool) inherits the
# pools but not their threads: work handed to them would never run, so the child starts afresh
os.register_at_fork(after_in_child=_pool.cache_clear)


def _per_matrix(fn, m: torch.Tensor):
    """fn(m) for a batched linear-algebra call that torch loops over serially on the CPU: with
    several torch threads, parts of the batch run in parallel (torch drops the GIL inside the
    call) and are joined again; fn may return a tensor or a tuple of tensors."""
    workers = torch.get_num_threads()
    if m.device.type != "cpu" or workers < 2 or len(m) < SPLIT_BATCH_FROM:
        return fn(m)
    parts = list(_pool(workers).map(fn, torch.tensor_split(m, workers)))
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(column) for column in zip(*parts))
    return torch.cat(parts)


def _all_finite(x: torch.Tensor) -> bool:
    """Whether every element is finite, from one summing pass: an inf or NaN makes its unit's
    sum non-finite, so finite sums prove it (~15x cheaper than `isfinite`, which takes four
    passes); a sum that overflows on finite values answers False, and callers then take their
    exact path."""
    return bool(torch.isfinite(_units(x).sum(dim=1)).all())


def _finite_or_nan(x: torch.Tensor, fn) -> torch.Tensor:
    """Apply a linear-algebra reduction that may not converge on non-finite input: run it on a
    cleaned copy and put NaN back for the units whose input was not finite."""
    finite = None if _all_finite(x) else torch.isfinite(x)  # None: nothing to clean or mark
    bad = None if finite is None else ~_units(finite).all(dim=1)
    clean = torch.where(finite, x, 0.0) if bad is not None and bool(bad.any()) else x
    try:
        out = fn(clean)
    except RuntimeError:  # e.g. an ill-conditioned decomposition: mark all units invalid
        return torch.full((x.shape[0],), float("nan"), dtype=x.dtype, device=x.device)
    return out if bad is None else torch.where(bad, torch.full_like(out, float("nan")), out)


# --- element-wise and shape-keeping unary ops: tensor -> same type ---------------------------
@takes_own
def abs_(x, own=False): return x.abs_() if own else x.abs()
@takes_own
def neg(x, own=False): return x.neg_() if own else -x
@takes_own
def log(x, own=False): return abs_(x, own).add_(EPS).log_()
@takes_own
def sqrt(x, own=False): return abs_(x, own).sqrt_()
@takes_own
def exp(x, own=False): return x.exp_() if own else torch.exp(x)
@takes_own
def square(x, own=False): return x.mul_(x) if own else x * x
@takes_own
def sigmoid(x, own=False): return x.sigmoid_() if own else torch.sigmoid(x)
@takes_own
def tanh(x, own=False): return x.tanh_() if own else torch.tanh(x)
@takes_own
def relu(x, own=False): return x.relu_() if own else torch.relu(x)
@takes_own
def sign(x, own=False): return x.sign_() if own else torch.sign(x)
@takes_own
def step(x, own=False): return _mask(torch.gt, x, own)
@takes_own
def reciprocal(x, own=False): return _safe_denominator(x, own).reciprocal_()


@takes_own
def l2_normalize(x, own=False):
    flat = _units(x)
    norm = flat.norm(dim=1, keepdim=True) + EPS
    return (flat.div_(norm) if own else flat / norm).reshape(x.shape)


@takes_own
def minmax_normalize(x, own=False):
    flat = _units(x)
    # amin/amax, not min/max: the same values without the indices (one sixth of the time)
    low, high = flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True)
    return (flat.sub_(low) if own else flat - low).div_(high - low + EPS).reshape(x.shape)


def _std64(flat: torch.Tensor) -> torch.Tensor:
    """Population standard deviation of each row with torch's bits, in about a third of the time.
    torch's CPU `std` is Welford's update in float64, a division per element in one serial chain
    (~5 ns an element); here two passes in float64, in pieces of STD64_BYTES that stay in cache.
    Both are exact far below float32's rounding, so both round to the same float32 unless the value
    lies within their error bounds of a rounding boundary (or far from its mean's scale): those
    rows and non-finite ones take torch's own `std` (tests/test_primitives.py)."""
    rows, n = max(1, STD64_BYTES // (8 * max(1, flat.shape[1]))), flat.shape[1]
    mean = torch.empty(flat.shape[0], dtype=torch.float64, device=flat.device)
    std = torch.empty_like(mean)
    # one float64 buffer for every piece, not a fresh copy per piece (one thread, 68 x 15 360:
    # the passes below took 0.84 ms against 1.15 ms; the same ops, so the same bits)
    buffer = torch.empty(min(rows, flat.shape[0]), n, dtype=torch.float64, device=flat.device)
    for start in range(0, flat.shape[0], rows):
        source = flat[start:start + rows]
        piece = buffer[:len(source)].copy_(source)
        torch.mean(piece, dim=1, out=mean[start:start + rows])
        piece.sub_(mean[start:start + rows].unsqueeze(1))
        torch.mean(piece.mul_(piece), dim=1, out=std[start:start + rows])
    std.sqrt_()
    # a relative error bound of either float64 result, with room: n·u·(1 + |mean| / std) (Chan,
    # Golub & LeVeque on Welford's update), times 8
    margin = mean.abs_().div_(std).add_(1).mul_(8 * n * 2.0**-53)
    low, high = (std * (1 - margin)).to(flat.dtype), (std * (1 + margin)).to(flat.dtype)
    # non-finite rows (NaN) included; a std of exactly 0 is a constant row, 0 in Welford's too
    unsure = torch.nonzero((low != high) & (std != 0)).flatten()
    out = std.to(flat.dtype)
    if len(unsure):
        out[unsure] = flat[unsure].std(dim=1, correction=0)
    return out


@takes_own
def zscore(x, own=False):
    flat = _units(x)
    mean, std = flat.mean(dim=1, keepdim=True), _std64(flat).unsqueeze(1)
    return (flat.sub_(mean) if own else flat - mean).div_(std + EPS).reshape(x.shape)


def softmax(x): return torch.softmax(x, dim=-1)
def log_softmax(x): return torch.log_softmax(x, dim=-1)


ELEMENTWISE_UNARY = {
    "abs": abs_, "neg": neg, "log": log, "sqrt": sqrt, "exp": exp, "square": square,
    "sigmoid": sigmoid, "tanh": tanh, "relu": relu, "sign": sign, "step": step,
    "reciprocal": reciprocal, "l2_norm": l2_normalize, "minmax_norm": minmax_normalize,
    "zscore": zscore, "softmax": softmax, "log_softmax": log_softmax,
}


# --- tensor -> Gram ----------------------------------------------------------------------------
def gram(x):
    """Row similarity X Xᵀ / features: (units, rows, rows), mean over the feature axis so that
    units of different widths are comparable."""
    rows = _rows(x)
    return rows @ rows.transpose(1, 2) / rows.shape[-1]


# --- reductions: tensor -> Scalar -----------------------------------------------------------------
def frobenius(x): return _units(x).norm(dim=1)
@takes_own
def l1(x, own=False): return abs_(_units(x), own).sum(dim=1)
def total(x): return _units(x).sum(dim=1)
def mean(x): return _units(x).mean(dim=1)
@takes_own
def mean_abs(x, own=False): return abs_(_units(x), own).mean(dim=1)
@takes_own
def rms(x, own=False):
    flat = _units(x)
    return (flat.pow_(2) if own else flat.pow(2)).mean(dim=1).sqrt()
def std(x): return _std64(_units(x))
def numel(x):
    """The per-unit element count: it reads x's shape only, so an evaluator may hand it a view
    of x's first unit expanded to every unit (`shape_only`) instead of computing x."""
    return torch.full((x.shape[0],), float(math.prod(x.shape[1:])), dtype=x.dtype, device=x.device)


numel.shape_only = True


def _small_gram(m: torch.Tensor) -> torch.Tensor:
    """M Mᵀ or MᵀM, whichever is smaller: both have the same non-zero eigenvalues."""
    return m @ m.transpose(1, 2) if m.shape[1] <= m.shape[2] else m.transpose(1, 2) @ m


def _row_gram(m: torch.Tensor) -> torch.Tensor:
    return m @ m.transpose(1, 2)


def _gram64(m: torch.Tensor, product=_row_gram) -> torch.Tensor:
    """product(m in float64), GRAM64_UNITS units at a time on the CPU. A whole group's float64
    copy is hundreds of MB that mostly land on fresh pages (96 ms of page faults for one
    [870, 64, 240] copy in a default run on the 2-core VM); a chunk's stays in cache. bmm
    multiplies each matrix on its own, so the Grams are the same bits (tests/test_primitives.py)."""
    if m.device.type != "cpu" or len(m) <= GRAM64_UNITS:
        return product(m.to(torch.float64))
    return torch.cat([product(m[start:start + GRAM64_UNITS].to(torch.float64))
                      for start in range(0, len(m), GRAM64_UNITS)])


def nuclear(x):
    """Sum of singular values, as the square roots of the eigenvalues of the smaller Gram
    matrix: a symmetric eigenproblem of size min(rows, features), far cheaper than an SVD."""
    def fn(m):
        eig = _per_matrix(torch.linalg.eigvalsh, _gram64(m, _small_gram))
        return eig.clamp(min=0).sqrt().sum(dim=-1).to(m.dtype)
    return _finite_or_nan(_rows(x), fn)


def logdet_gram(x):
    """log det(X Xᵀ / features + eps·I) over the rows: the volume the rows span, always defined
    (a Cholesky that fails marks the unit invalid)."""
    eps = 1e-6

    def fn(m):
        g = _gram64(m) / m.shape[-1]  # float64: float32 rounding would swamp eps on a singular Gram
        eye = torch.eye(g.shape[-1], dtype=g.dtype, device=g.device)
        chol, info = _per_matrix(torch.linalg.cholesky_ex, g + eps * eye)
        value = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(dim=-1)
        return torch.where(info == 0, value, torch.full_like(value, float("nan"))).to(m.dtype)
    return _finite_or_nan(_rows(x), fn)


REDUCTIONS = {
    "frobenius": frobenius, "l1": l1, "sum": total, "mean": mean, "mean_abs": mean_abs,
    "rms": rms, "std": std, "nuclear": nuclear, "logdet_gram": logdet_gram, "numel": numel,
}


# --- binary ops -----------------------------------------------------------------------------------
@takes_own
def add(a, b, own=False): return a.add_(b) if own else a + b
@takes_own
def sub(a, b, own=False): return a.sub_(b) if own else a - b
@takes_own
def mul(a, b, own=False): return a.mul_(b) if own else a * b


@takes_own
def div(a, b, own=False):
    denominator = _safe_denominator(b)
    return a.div_(denominator) if own else torch.div(a, denominator, out=denominator)


add.commutative = mul.commutative = True  # a + b and a * b are b + a and b * a, bit for bit


ELEMENTWISE_BINARY = {"add": add, "sub": sub, "mul": mul, "div": div}


def _is_identity(g: torch.Tensor) -> bool:
    """Whether g is one identity matrix broadcast over the units (an `eye_*` constant): checked
    on the one stored matrix, so the test costs rows² element reads."""
    if g.dim() != 3 or g.stride(0) != 0 or g.shape[1] != g.shape[2]:
        return False
    return torch.equal(g[0], torch.eye(g.shape[1], dtype=g.dtype, device=g.device))


def matmul(g, a):
    """(units, rows, rows) @ (units, rows..., d): a Gram mixing the rows of a tensor of its type
    (or of another Gram) keeps that operand's type. The identity times a finite operand is
    the operand, -0 turned to +0 as the product turns it (a + 0.0, the same bits as the
    batched product, tests/test_primitives.py): a third of the trees of a default run multiply
    by an `eye_*` constant. A non-finite operand takes the product, whose 0 * inf is NaN."""
    rows = _rows(a)
    if _is_identity(g) and _all_finite(rows):
        return (rows + 0.0).reshape(a.shape)
    return (g @ rows).reshape(a.shape)


# an evaluator that knows an operand to be `identity_safe` may take matmul(eye_*, operand) as the
# operand itself, without the pass that `+ 0.0` costs
matmul.identity_keeps_safe_operand = True


def identity_safe(x: torch.Tensor) -> bool:
    """Whether the identity times x is x bit for bit: every element finite and no -0.0 (the
    product turns it into +0.0). A caller checks a statistic once and reuses the answer."""
    return bool(torch.isfinite(x).all()) and not bool((torch.signbit(x) & (x == 0)).any())


SCALAR_UNARY = {
    "abs": abs_, "neg": neg, "log": log, "sqrt": sqrt, "exp": exp, "square": square,
    "reciprocal": reciprocal, "sigmoid": sigmoid, "tanh": tanh,
}
