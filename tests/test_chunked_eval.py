"""StatsTable evaluates a group a chunk of units at a time on the CPU (issue 21), on one thread or
shared out among worker threads: the scores must be those of one call on the whole group, for
every primitive, random trees of both spaces, Grams, matmul and logdet, any chunk size, any
number of workers, invalid units and memo hits. (Bit for bit on one thread, as these tests run;
REL allows for a summation order that changes with the chunk.)"""

import copy
import math
import random
import threading

import numpy as np
import pytest
import torch

from primitives import Scalar, display_name, generate_tree, parse_formula
from vit_space.scoring import table as table_module
from vit_space.scoring.table import CHUNK_BYTES, StatsTable
from vit_space.stats.statistics import TENSOR_FIELDS
from vit_space.stats.terminals import Activation, MlpWeight, MsaWeight, vit_primitive_set

WHOLE = 10**9  # more units than any group: the unchunked path
CHUNKS = (1, 7, WHOLE)
# (workers, units per chunk) beside the one-worker chunkings: chunks of every group shared out
# among two workers (helper processes where fork exists), and whole groups, one per task; and
# ("threads", workers, units): the same on worker threads
PARALLEL = ((2, 1), (2, 7), (2, WHOLE))
THREADED = ((2, 7),)
REL = 1e-6  # where an op's summation order could change with the chunk (none seen on one thread)
ARCHS = {"autoformer": 2, "pit": 2}
DATASETS = ("c100", "flowers")


def pset():
    return vit_primitive_set()


def tree(text):
    return parse_formula(text, pset())


@pytest.fixture(scope="module")
def items(two_arch_items):
    """space -> per-item statistics of ARCHS' archs on DATASETS (conftest, 32 px)."""
    return two_arch_items


def by_chunk_size(stats):
    """{chunk size, or (workers, chunk size): table}, the tables sharing one stack of `stats`;
    a bare chunk size is one worker."""
    base = StatsTable(stats)
    return {**{units: base.variant(units, workers=1) for units in CHUNKS},
            **{(workers, units): base.variant(units, workers) for workers, units in PARALLEL},
            **{("threads", workers, units): base.variant(units, workers, processes=False)
               for workers, units in THREADED}}


@pytest.fixture(scope="module")
def tables(items):
    return {space: by_chunk_size(stats) for space, stats in items.items()}


@pytest.fixture(scope="module")
def small_tables(items):
    """On the first data set alone: half the units, for the test that runs every primitive."""
    return {space: by_chunk_size(stats[::len(DATASETS)]) for space, stats in items.items()}


def assert_agree(whole, chunked, what=""):
    """Same NaN pattern; finite scores equal bit for bit or within REL."""
    assert whole.shape == chunked.shape, what
    np.testing.assert_array_equal(np.isnan(whole), np.isnan(chunked), err_msg=what)
    finite = np.isfinite(whole)
    np.testing.assert_allclose(chunked[finite], whole[finite], rtol=REL, atol=0, err_msg=what)


def assert_chunkings_agree(by_chunk, t):
    whole = by_chunk[WHOLE].scores(t)
    for key, table in by_chunk.items():
        if key != WHOLE:
            assert_agree(whole, table.scores(t), f"{t} in chunks of {key} (or workers, units)")
    return whole


def test_groups_are_split_into_chunks(tables, monkeypatch):
    """The fixtures chunk for real: a tree is evaluated once per chunk of each group, and chunks
    of 7 split groups, leaving a shorter last chunk (of one unit somewhere), so that the other
    tests compare two different paths."""
    last_chunks = set()
    for by_chunk in tables.values():
        sizes = [len(owner) for _, owner in by_chunk[7].groups]
        assert any(n > 7 for n in sizes) and any(n % 7 for n in sizes) and max(sizes) < WHOLE
        last_chunks |= {n % 7 for n in sizes if n > 7}
        calls = []
        real = table_module.evaluate_tree
        monkeypatch.setattr(table_module, "evaluate_tree", lambda *a: calls.append(1) or real(*a))
        by_chunk[7].scores(tree("frobenius(msa_g)"))  # a statistic that no two items share
        assert len(calls) == sum(math.ceil(n / 7) for n in sizes)
        calls.clear()
        by_chunk[WHOLE].scores(tree("frobenius(msa_g)"))
        assert len(calls) == len(sizes)
        monkeypatch.undo()
    assert 1 in last_chunks


# --- every primitive ------------------------------------------------------------------------

ARGS = {Scalar: ("std(msa_g)", "msa_numel"), MsaWeight: ("msa_g", "msa_w"),
        MlpWeight: ("mlp_w", "mlp_g"), Activation: ("mlp_ga", "msa_a")}
GRAM_ARGS = {"MsaWeightGram": ("gram(msa_w)", "gram(msa_g)"),
             "MlpWeightGram": ("gram(mlp_g)", "gram(mlp_w)"),
             "ActivationGram": ("gram(msa_a)", "gram(mlp_ga)")}


def _arg(typ, i):
    return ARGS[typ][i] if typ in ARGS else GRAM_ARGS[typ.__name__][i]


def primitive_formulas():
    """One Scalar formula per primitive of the ViT set: the primitive on terminals (or Grams) of
    its argument types, a tensor result read through frobenius, which changes if an op mixed the
    units (a normalisation over the whole group, say)."""
    out = []
    for ret, prims in pset().primitives.items():
        for prim in prims:
            call = f"{display_name(prim)}({', '.join(_arg(t, i) for i, t in enumerate(prim.args))})"
            out.append(call if ret is Scalar else f"frobenius({call})")
    return out


def test_primitive_formulas_cover_the_set():
    formulas = primitive_formulas()
    assert len(formulas) == sum(len(p) for p in pset().primitives.values()) > 100
    for text in formulas:
        assert tree(text)[0].ret is Scalar


@pytest.mark.parametrize("space", ARCHS)
def test_every_primitive_agrees_chunked_and_whole(small_tables, space):
    assert any(len(owner) > 7 for _, owner in small_tables[space][7].groups)
    finite = 0
    for text in primitive_formulas():
        whole = assert_chunkings_agree(small_tables[space], tree(text))
        finite += bool(np.isfinite(whole).all())
    assert finite > 0.9 * len(primitive_formulas())  # the comparisons are mostly of numbers


# --- random trees, Grams, matmul, logdet -----------------------------------------------------

@pytest.mark.parametrize("space, seed", [("autoformer", 0), ("pit", 1)])
def test_random_trees_agree_chunked_and_whole(tables, space, seed):
    rng = random.Random(seed)
    trees = [generate_tree(pset(), 2, 5, rng) for _ in range(30)]
    valid = sum(bool(np.isfinite(assert_chunkings_agree(tables[space], t)).any()) for t in trees)
    assert valid >= 15


LINEAR_ALGEBRA = (
    "logdet_gram(msa_w)",
    "logdet_gram(matmul(gram(msa_a), msa_ga))",
    "nuclear(matmul(gram(mlp_w), gram(mlp_g)))",
    "add(logdet_gram(gram(mlp_a)), nuclear(matmul(gram(msa_g), msa_w)))",
    "frobenius(matmul(matmul(gram(mlp_ga), gram(mlp_a)), zscore(mlp_a)))",
    "div(logdet_gram(matmul(eye_msa_w, msa_g)), sqrt(nuclear(softmax(gram(msa_a)))))",
)


@pytest.mark.parametrize("space", ARCHS)
def test_grams_matmul_logdet_agree(tables, space):
    for text in LINEAR_ALGEBRA:
        whole = assert_chunkings_agree(tables[space], tree(text))
        assert np.isfinite(whole).all(), text


@pytest.mark.parametrize("space", ARCHS)
def test_trees_of_constants_agree(tables, space):
    """Trees that read no statistic (a chunk then slices only what sizes the constants)."""
    for text in ("sqrt(one)", "add(one, frobenius(eye_msa_a))",
                 "logdet_gram(matmul(eye_mlp_w, eye_mlp_w))"):
        whole = assert_chunkings_agree(tables[space], tree(text))
        assert np.isfinite(whole).all() and len(np.unique(whole)) > 1, text  # per-item block counts


def test_a_primitive_that_mixes_units_is_caught(tables, monkeypatch):
    """The comparison can fail: an op that normalised over all units (not one) gives other
    scores in chunks, and assert_agree says so."""
    context = pset().context
    monkeypatch.setitem(context, "zscore:MsaWeight", lambda x: (x - x.mean()) / x.std())
    by_chunk = {key: t.variant(t.chunk_units, t.workers, t.processes)  # fresh memos
                for key, t in tables["autoformer"].items()}
    t = tree("frobenius(zscore(msa_w))")
    for key in (7, (2, 7), ("threads", 2, 7)):  # (2, WHOLE) evaluates each group whole: no chunk to tell apart
        with pytest.raises(AssertionError):
            assert_agree(by_chunk[WHOLE].scores(t), by_chunk[key].scores(t))


# --- invalid units ---------------------------------------------------------------------------

def _poisoned(stats):
    """Copies with huge (finite) gradients in one block of item 0, a NaN in one block of item 1
    and an inf in one block of item 3."""
    out = copy.deepcopy(stats)
    out[0]["blocks"][1]["msa_g"][0] = 1e20  # finite, but its square overflows float32
    out[1]["blocks"][2]["msa_w"][0, 0] = np.nan
    out[3]["blocks"][0]["mlp_a"][..., -1] = np.inf
    return out


INVALID = {  # tree -> the items it is invalid on
    "frobenius(msa_w)": {1}, "nuclear(msa_w)": {1}, "logdet_gram(gram(msa_w))": {1},
    "l1(softmax(mlp_a))": {3}, "nuclear(matmul(gram(mlp_a), mlp_ga))": {3},
    "sum(square(msa_g))": {0}, "add(frobenius(mlp_w), mean(msa_a))": set(),
}


@pytest.mark.parametrize("space", ARCHS)
def test_invalid_units_stay_nan_in_either_path(items, space):
    by_chunk = by_chunk_size(_poisoned(items[space]))
    for text, invalid in INVALID.items():
        whole = assert_chunkings_agree(by_chunk, tree(text))
        assert set(np.flatnonzero(np.isnan(whole))) == invalid, text
        assert np.isfinite(np.delete(whole, list(invalid))).all(), text


IDENTITY_PRODUCTS = ("frobenius(matmul(eye_msa_w, msa_w))", "nuclear(matmul(eye_msa_w, msa_g))",
                     "l1(sub(matmul(eye_msa_a, mlp_a), matmul(eye_msa_a, matmul(eye_msa_a, msa_a))))")


@pytest.mark.parametrize("workers", (1, 2))
def test_identity_products_of_statistics_keep_the_bits(items, workers, monkeypatch):
    """matmul(eye_*, statistic) is the statistic itself where the statistic is finite with no
    -0.0 (checked per group), the product elsewhere: the scores are the product's, bit for bit."""
    stats = _poisoned(items["autoformer"])
    stats[2]["blocks"][0]["msa_w"][0, 0] = -0.0  # the product would make it +0.0
    passing = StatsTable(stats, chunk_units=7, workers=workers)
    multiplying = StatsTable(stats, chunk_units=7, workers=workers)
    clean = StatsTable(items["autoformer"], chunk_units=7, workers=workers)
    for text in IDENTITY_PRODUCTS:
        t = tree(text)
        got = passing.scores(t)
        with monkeypatch.context() as patch:
            patch.setattr(table_module, "identity_operands", lambda *args: {})
            expect = multiplying.scores(t)
        np.testing.assert_array_equal(got, expect, err_msg=text)
    safe = passing.safe_operands(tree(IDENTITY_PRODUCTS[0]), pset())
    assert not all("msa_w" in names for names in safe)  # -0.0 or NaN in some group: multiplied
    assert all(clean.safe_operands(tree(text), pset()) == [frozenset({"msa_w"})] * len(clean.groups)
               for text in IDENTITY_PRODUCTS[:1])


# --- the memo ----------------------------------------------------------------------------------

@pytest.mark.parametrize("workers", (1, 2))
def test_memo_holds_whole_groups_and_repeats_exactly(items, workers):
    t = tree("add(mean_abs(mul(msa_w, msa_g)), frobenius(matmul(gram(mlp_ga), msa_a)))")
    whole = StatsTable(items["autoformer"], chunk_units=WHOLE).scores(t)
    chunked = StatsTable(items["autoformer"], chunk_units=7, workers=workers)
    first = chunked.scores(t)
    assert_agree(whole, first)
    np.testing.assert_array_equal(chunked.scores(t), first)  # the second call reads the memo
    for (_, owner), memo in zip(chunked.groups, chunked.memos):
        assert {"mean_abs(mul(msa_w, msa_g))", str(t)} <= set(memo)
        assert "mul(msa_w, msa_g)" not in memo and "gram(mlp_ga)" not in memo
        assert all(v.shape == owner.shape for v in memo.values())  # whole-group vectors
    # what a hit returns is the memo's own (whole-group) vector, sliced chunk by chunk
    for memo in chunked.memos:
        key = str(t)
        memo[key] = torch.arange(len(memo[key]), dtype=memo[key].dtype)
    expect = np.zeros(chunked.n_items)
    for _, owner in chunked.groups:
        np.add.at(expect, owner.numpy(), np.arange(len(owner)))
    np.testing.assert_array_equal(chunked.scores(t), expect)


@pytest.mark.parametrize("workers", (1, 2))
def test_memo_hit_on_a_shared_subtree(items, workers):
    """A tree that reuses a memoised subtree, in chunks, equals a fresh unchunked evaluation."""
    chunked = StatsTable(items["pit"], chunk_units=7, workers=workers)
    chunked.scores(tree("logdet_gram(gram(mlp_g))"))
    other = tree("sub(logdet_gram(gram(mlp_g)), exp(neg(std(msa_a))))")
    fresh = StatsTable(items["pit"], chunk_units=WHOLE).scores(other)
    assert_agree(fresh, chunked.scores(other))
    np.testing.assert_array_equal(chunked.scores(other), chunked.scores(other))


# --- the chunk size rule ----------------------------------------------------------------------

def test_chunk_size_rule(items):
    table = StatsTable(items["autoformer"])
    assert torch.get_num_threads() == 1  # conftest
    for inputs, _ in table.groups:
        units = len(next(iter(inputs.values())))
        per_unit = max(v[0].numel() * v.element_size() for v in inputs.values())
        assert table.units_per_chunk(inputs) == max(1, CHUNK_BYTES // per_unit)
        meta = {f: v.to("meta") for f, v in inputs.items()}  # any device but the CPU: whole groups
        assert table.units_per_chunk(meta) == units
        torch.set_num_threads(2)  # several threads: one worker each, in chunks (automatic) ...
        try:
            assert table.worker_count() == 2
            assert table.units_per_chunk(inputs) == max(1, CHUNK_BYTES // per_unit)
            # ... or whole groups on both threads where one worker is asked for
            assert table.variant(None, workers=1).units_per_chunk(inputs) == units
        finally:
            torch.set_num_threads(1)
    assert table.worker_count() == 1
    assert StatsTable(items["autoformer"], chunk_units=3).units_per_chunk(table.groups[0][0]) == 3
    for bad in (0, -2):
        with pytest.raises(ValueError):
            StatsTable(items["autoformer"], chunk_units=bad)
        with pytest.raises(ValueError):
            StatsTable(items["autoformer"], workers=bad)


def test_workers_run_torch_on_one_thread_each(items, monkeypatch):
    """Two workers share a group's chunks out, each with torch on one thread, while the
    caller's torch thread count, and the default of threads started later, stay as they were
    (threads, not helper processes: see test_unit_processes)."""
    seen = []
    real = table_module.evaluate_tree

    def spy(*args):
        seen.append((threading.get_ident(), torch.get_num_threads()))
        return real(*args)

    monkeypatch.setattr(table_module, "evaluate_tree", spy)
    torch.set_num_threads(2)
    try:
        table = StatsTable(items["autoformer"], chunk_units=1, workers=2, processes=False)
        for _ in range(3):  # a worker may take every chunk of a fast call; not of all three
            table.variant(1, workers=2, processes=False).scores(tree("nuclear(matmul(gram(mlp_ga), msa_a))"))
        assert torch.get_num_threads() == 2
        later = []
        thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        assert later == [2]
    finally:
        torch.set_num_threads(1)
    assert len(seen) == 3 * sum(len(owner) for _, owner in table.groups)  # chunks of one unit
    assert {threads for _, threads in seen} == {1}
    assert len({ident for ident, _ in seen}) == 2 and threading.get_ident() not in dict(seen)


def test_chunk_size_from_the_largest_statistic():
    """Blocks whose largest statistic is 1 MiB a unit: CHUNK_BYTES / 1 MiB units per chunk."""
    block = {f: np.zeros((2, 4), np.float32) for f in TENSOR_FIELDS}
    block["mlp_ga"] = np.ones((2, 16, 8192), np.float32)  # 1 MiB
    block.update(msa_numel=1.0, mlp_numel=1.0)
    table = StatsTable([{"blocks": [block] * 3}, {"blocks": [block] * 20}])
    assert table.units_per_chunk(table.groups[0][0]) == CHUNK_BYTES // 2**20 < 23
    assert table.scores(tree("l1(mlp_ga)")).tolist() == [3 * 2**18, 20 * 2**18]  # in chunks of 4
