"""Proxy fitness: correlations and JCM, tree proxies against the direct baselines they encode,
StatsTable grouping/aggregation/memo, ProxyEvaluator, runners/rank.py, and known bench values."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from primitives import parse_formula
from vit_space.data.batches import make_batch
from vit_space.data.datasets import NUM_CLASSES
from vit_space.models.builders import build_model, transformer_blocks
from vit_space.scoring.baseline_scores import baseline_scores
from vit_space.scoring.baselines import score_baseline
from vit_space.scoring.evaluator import ProxyEvaluator
from vit_space.scoring.jcm import WORST, correlations, jcm, tied_pair_share
from vit_space.scoring.proxies import BASELINE_TREES
from vit_space.scoring.table import ScalarMemo, StatsTable
from vit_space.stats.statistics import TENSOR_FIELDS, StatsConfig, extract_stats
from vit_space.stats.terminals import vit_primitive_set

REPO = Path(__file__).resolve().parents[1]
DATASETS = ("c100", "flowers", "chaoyang")
COLUMNS = ("c100_kd_acc", "flower_kd_acc", "chaoyang_kd_acc")
FULL = StatsConfig(batch_size=4, img_size=32, rows=None, tokens=None)
PARAMS_TREE = "add(msa_numel, mlp_numel)"
RANK_PROXY = "params;" + PARAMS_TREE


def tree(text):
    return parse_formula(text, vit_primitive_set())


def block_params(arch: dict) -> int:
    """Weights of the transformer blocks' MSA (qkv + proj: 4D^2) and MLP (fc1 + fc2: 2HD)."""
    d = arch["hidden_dim"]
    return sum(4 * d * d + 2 * int(d * r) * d for r in arch["mlp_ratio"])


def autoformer_params(arch: dict, num_classes: int, img_size: int) -> int:
    """Every parameter of an AutoFormer subnet, counted by hand from the architecture."""
    d = arch["hidden_dim"]
    per_block = sum(3 * d + d + int(d * r) + d + 4 * d for r in arch["mlp_ratio"])  # biases, 2 LNs
    patches = (img_size // 16) ** 2
    stem = 3 * 16 * 16 * d + d + d + (patches + 1) * d  # patch conv + bias, cls token, pos embed
    return block_params(arch) + per_block + stem + 2 * d + d * num_classes + num_classes


# ------------------------------------------------------------------ correlations and JCM

def test_correlations_equal_scipy():
    rng = np.random.default_rng(0)
    s = rng.normal(size=30)
    a = s + rng.normal(size=30)
    out = correlations(s, list(a))
    assert out["kendall"] == pytest.approx(stats.kendalltau(s, a).statistic, abs=1e-12)
    assert out["spearman"] == pytest.approx(stats.spearmanr(s, a).statistic, abs=1e-12)
    assert out["pearson"] == pytest.approx(stats.pearsonr(s, a).statistic, abs=1e-12)
    assert all(isinstance(v, float) for v in out.values())


def test_correlations_hand_checked():
    assert correlations([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(
        {"kendall": 1.0, "spearman": 1.0, "pearson": 1.0})
    assert correlations([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(
        {"kendall": -1.0, "spearman": -1.0, "pearson": -1.0})
    # one discordant pair of six: tau = (5 - 1) / 6; rank differences (0,1,1,0): rho = 1 - 6*2/60
    out = correlations([1, 2, 3, 4], [1, 3, 2, 4])
    assert out["kendall"] == pytest.approx(2 / 3) and out["spearman"] == pytest.approx(0.8)
    # monotone but non-linear: ranks are perfect, Pearson is not
    out = correlations([1, 2, 3, 100], [1, 2, 3, 4])
    assert out["kendall"] == pytest.approx(1.0) and out["pearson"] < 0.99


def test_correlations_skip_unknown_accuracies():
    full = correlations([1, 2, 3, 4], [1, 3, 2, 4])
    assert correlations([1, 2, 3, 4, 100], [1, 3, 2, 4, None]) == pytest.approx(full)
    assert correlations([1, 2, 3, 4, -100], [1, 3, 2, 4, None]) == pytest.approx(full)
    assert correlations([7, 1, 2, 3, 4], [None, 1, 3, 2, 4]) == pytest.approx(full)
    # an invalid score where the accuracy is unknown does not count
    assert correlations([float("nan"), 1, 2, 3, 4], [None, 1, 3, 2, 4]) == pytest.approx(full)
    # fewer than three known accuracies: no correlation
    assert correlations([1, 2, 3, 4], [None, 1, None, 2]) is None


@pytest.mark.parametrize("scores, acc", [
    ([1, 1, 1, 1], [1, 2, 3, 4]),                      # constant scores
    ([1, float("nan"), 3, 4], [1, 2, 3, 4]),           # NaN score
    ([1, float("inf"), 3, 4], [1, 2, 3, 4]),           # inf score
    ([float("nan")] * 4, [1, 2, 3, 4]),
    ([1, 2, 3, 4], [5, 5, 5, 5]),                      # constant accuracies
])
def test_correlations_invalid_give_none(scores, acc):
    assert correlations(scores, acc) is None


def test_jcm():
    per = {"x": {"kendall": 0.2, "spearman": 0.3, "pearson": 0.9},
           "y": {"kendall": -0.4, "spearman": 0.5, "pearson": 0.1}}
    assert jcm(per) == pytest.approx(-0.1)
    assert jcm(per, metric="spearman") == pytest.approx(0.4)
    assert jcm(per, metric="pearson") == pytest.approx(0.5)
    assert jcm(per, weights={"x": 3.0, "y": 1.0}) == pytest.approx((0.6 - 0.4) / 4)
    assert jcm(per, absolute=True) == pytest.approx(0.3)
    assert jcm(per, weights={"x": 1.0, "y": 3.0}, absolute=True) == pytest.approx((0.2 + 1.2) / 4)
    assert jcm({**per, "z": None}) == WORST == -1.0
    assert jcm({"x": None}, absolute=True) == WORST
    assert jcm({}) == WORST
    assert isinstance(jcm(per), float)
    with pytest.raises(ValueError):
        jcm(per, metric="r2")


# ------------------------------------------------------------------ trees equal direct baselines

AGREEMENT_ITEMS = [("autoformer", 0, "c100"), ("autoformer", 1, "flowers"), ("autoformer", 2, "chaoyang"),
                   ("pit", 0, "c100"), ("pit", 1, "chaoyang")]


@pytest.mark.parametrize("space, index, dataset", AGREEMENT_ITEMS)
def test_baseline_trees_equal_direct_baselines(space, index, dataset, autoformer_bench, pit_bench):
    bench = autoformer_bench if space == "autoformer" else pit_bench
    arch = bench.records[index]["arch"]
    full = extract_stats(space, arch, dataset, FULL)
    table = StatsTable([full])
    if space == "pit":  # stages of different widths/token counts: several shape groups
        assert len(table.groups) > 1
    model = build_model(space, arch, NUM_CLASSES[dataset], FULL.img_size)
    images, labels = make_batch(dataset, FULL.batch_size, FULL.img_size, FULL.seed)
    got, want = {}, {}
    for name, formula in BASELINE_TREES.items():
        got[name] = float(table.scores(tree(formula))[0])
        want[name] = score_baseline(name, model, images, labels, scope="blocks")
    mismatched = {n: (got[n], want[n]) for n in BASELINE_TREES
                  if not np.isclose(got[n], want[n], rtol=1e-4, atol=0)}
    assert not mismatched, mismatched
    assert all(np.isfinite(v) and v > 0 for v in got.values())
    # the params tree is exactly the blocks' weight count
    assert got["params"] == sum(w.numel() for b in transformer_blocks(model)
                                for w in (b.attn.qkv.weight, b.attn.proj.weight,
                                          b.mlp.fc1.weight, b.mlp.fc2.weight))


# ------------------------------------------------------------------ StatsTable on hand-made stats

def make_block(msa_rows, mlp_rows, d, tokens, value, numel):
    rows = {"msa_w": msa_rows, "msa_g": msa_rows, "mlp_w": mlp_rows, "mlp_g": mlp_rows}
    block = {}
    for f in TENSOR_FIELDS:
        shape = (rows[f], d) if f in rows else (2, tokens, d)
        block[f] = np.full(shape, value, dtype=np.float32)
    block["msa_numel"], block["mlp_numel"] = float(numel), float(numel) * 10
    return block


def hand_items():
    """item 0: two blocks of shape S; item 1: one S block, two T blocks; item 2: one T block."""
    s = dict(msa_rows=4, mlp_rows=6, d=3, tokens=5)
    t = dict(msa_rows=8, mlp_rows=4, d=5, tokens=2)
    return [
        {"blocks": [make_block(**s, value=1.0, numel=1), make_block(**s, value=2.0, numel=2)]},
        {"blocks": [make_block(**s, value=3.0, numel=3), make_block(**t, value=4.0, numel=4),
                    make_block(**t, value=5.0, numel=5)]},
        {"blocks": [make_block(**t, value=6.0, numel=6)]},
    ]


def test_stats_table_groups_shapes_and_sums_per_item():
    table = StatsTable(iter(hand_items()))  # a generator is fine
    assert table.n_items == 3 and len(table.groups) == 2
    assert table.block_counts.tolist() == [2.0, 3.0, 1.0]
    np.testing.assert_allclose(table.scores(tree("msa_numel")), [3.0, 12.0, 6.0])
    np.testing.assert_allclose(table.scores(tree("mlp_numel")), [30.0, 120.0, 60.0])
    # sum(msa_w): value * rows * d per block (S: 4 x 3 = 12, T: 8 x 5 = 40)
    np.testing.assert_allclose(table.scores(tree("sum(msa_w)")), [12 * 1 + 12 * 2, 12 * 3 + 40 * 4 + 40 * 5, 40 * 6])
    # numel of an activation: 2 x tokens x d (S: 30, T: 20)
    np.testing.assert_allclose(table.scores(tree("numel(mlp_a)")), [60.0, 70.0, 20.0])
    out = table.scores(tree("msa_numel"))
    assert out.dtype == np.float64 and out.shape == (3,)


def test_stats_table_mean_aggregate():
    table = StatsTable(hand_items(), aggregate="mean")
    np.testing.assert_allclose(table.scores(tree("msa_numel")), [1.5, 4.0, 6.0])
    np.testing.assert_allclose(table.scores(tree("mean(msa_w)")), [1.5, 4.0, 6.0])
    with pytest.raises(ValueError):
        StatsTable(hand_items(), aggregate="max")


def test_stats_table_invalid_block_invalidates_its_item_only():
    items = hand_items()
    items[1]["blocks"][1]["msa_w"][0, 0] = np.nan  # a T block of item 1
    out = StatsTable(items).scores(tree("sum(msa_w)"))
    assert np.isnan(out[1]) and np.isfinite(out[[0, 2]]).all()
    np.testing.assert_allclose(out[[0, 2]], [36.0, 240.0])
    items = hand_items()
    items[0]["blocks"][0]["msa_g"][:] = np.inf
    out = StatsTable(items).scores(tree("add(msa_numel, frobenius(msa_g))"))
    assert np.isnan(out[0]) and np.isfinite(out[1:]).all()
    # a tree that overflows on some blocks only: exp(x) is inf in float32 for x > 88.7; the
    # mlp_numel of the blocks are 10, 20 | 30, 40, 50 | 60
    out = StatsTable(hand_items()).scores(tree("exp(add(mlp_numel, mlp_numel))"))
    assert np.isfinite(out[0]) and np.isnan(out[1]) and np.isnan(out[2])


def test_stats_table_rejects_non_scalar_trees():
    from deap import gp
    tensor_tree = gp.PrimitiveTree(tree("frobenius(msa_w)")[1:])  # just the terminal msa_w
    assert str(tensor_tree) == "msa_w"
    with pytest.raises(ValueError):
        StatsTable(hand_items()).scores(tensor_tree)


def test_scalar_memo_keeps_scalars_only_and_repeats_exactly():
    table = StatsTable(hand_items())
    t = tree("add(mean_abs(mul(msa_w, msa_g)), frobenius(matmul(gram(mlp_ga), msa_a)))")
    first = table.scores(t)
    assert np.isfinite(first).all()
    second = table.scores(t)
    np.testing.assert_array_equal(first, second)
    for memo in table.memos:
        assert len(memo) > 0
        assert all(v.dim() == 1 for v in memo.values())
        assert "mul(msa_w, msa_g)" not in memo and "gram(mlp_ga)" not in memo
        assert "matmul(gram(mlp_ga), msa_a)" not in memo
        assert "mean_abs(mul(msa_w, msa_g))" in memo and str(t) in memo
    # the memo is what a repeated evaluation reads
    for memo in table.memos:
        memo[str(t)] = torch.ones_like(memo[str(t)])
    np.testing.assert_allclose(table.scores(t), table.block_counts.numpy())
    # a different tree sharing a subtree reuses it and is still right
    other = tree("mean_abs(mul(msa_w, msa_g))")
    np.testing.assert_allclose(table.scores(other), StatsTable(hand_items()).scores(other))


def test_scalar_memo_lru():
    memo = ScalarMemo(max_entries=2)
    memo["a"], memo["b"] = torch.ones(3), torch.zeros(3)
    memo["big"] = torch.ones(3, 4)  # tensor-valued: not kept
    assert "big" not in memo and len(memo) == 2
    assert "a" in memo  # touching refreshes
    memo["c"] = torch.ones(3)
    assert list(memo) == ["a", "c"]


# ------------------------------------------------------------------ ProxyEvaluator

def test_proxy_evaluator_params_kendall(autoformer_bench, tiny_cfg, session_cache):
    bench = autoformer_bench.head(8)
    indices = bench.split("all")
    assert indices == list(range(8))
    ev = ProxyEvaluator(bench, indices, DATASETS, "kd", tiny_cfg, session_cache, progress=False)
    assert ev.columns == list(COLUMNS)
    result = ev.evaluate(tree(PARAMS_TREE))
    params = [block_params(r["arch"]) for r in bench.records]
    for column in COLUMNS:
        np.testing.assert_array_equal(result.scores[column], params)
        acc = [r[column] for r in bench.records]
        expect = stats.kendalltau(params, acc).statistic
        assert result.datasets[column]["kendall"] == pytest.approx(expect, abs=1e-12)
        assert result.datasets[column]["spearman"] == pytest.approx(stats.spearmanr(params, acc).statistic)
    assert result.valid
    assert result.jcm == pytest.approx(np.mean([result.datasets[c]["kendall"] for c in COLUMNS]))
    assert set(result.as_json()) == {"jcm", "datasets", "tied_pairs", "tied_share"}
    assert result.as_json()["tied_share"] == pytest.approx(tied_pair_share(params))
    # an overflowing tree is invalid everywhere: WORST
    bad = ev.evaluate(tree("exp(exp(exp(msa_numel)))"))
    assert not bad.valid and bad.jcm == WORST
    assert all(v is None for v in bad.datasets.values())


# ------------------------------------------------------------------ runners/rank.py

def _run_env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("AUTOPROX_CACHE", None)
    return env


def _rank_cmd(out, proxy):
    return [sys.executable, "runners/rank.py", "--archs", "10", "--img-size", "32", "--batch-size", "2",
            "--proxy", proxy, "--split", "all", "--cache", str(out / "cache"),
            "--json", str(out / "out.json"), "--plot", str(out / "plots"), "--quiet"]


BAD_PROXIES = ("mul(msa_w, mlp_w)", "nope")


def _launch(out, proxy):
    return subprocess.Popen(_rank_cmd(out, proxy), cwd=REPO, env=_run_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def rank_runs(tmp_path_factory):
    """runners/rank.py runs started in the background (the good one extracts statistics for 30
    items), so that they overlap the in-process tests of this module; the tests wait for them."""
    runs = {}
    for i, proxy in enumerate((RANK_PROXY,) + BAD_PROXIES):
        out = tmp_path_factory.mktemp(f"rank{i}")
        runs[proxy] = (_launch(out, proxy), out)
    yield runs
    for proc, _ in runs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module", autouse=True)
def _start_rank_early(request):
    if any(item.name.startswith("test_rank_runner") for item in request.session.items):
        request.getfixturevalue("rank_runs")


def test_rank_runner(rank_runs, autoformer_bench):
    proc, out = rank_runs[RANK_PROXY]
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr[-2000:]
    report = json.loads((out / "out.json").read_text())
    assert {"space", "split", "n", "proxies"} <= set(report)
    assert (report["space"], report["split"], report["n"]) == ("autoformer", "all", 10)
    assert list(report["proxies"]) == ["params", PARAMS_TREE]
    records = autoformer_bench.records[:10]
    for name, entry in report["proxies"].items():
        assert set(entry) == {"datasets", "jcm", "tied_pairs", "tied_share", "jcm_interval", "ceiling_share"}
        assert list(entry["datasets"]) == list(COLUMNS)
        for dataset, column in zip(DATASETS, COLUMNS):
            corr = entry["datasets"][column]
            assert set(corr) == {"kendall", "spearman", "pearson"}
            acc = [r[column] for r in records]
            if name == "params":  # the direct baseline counts every parameter (scope "all")
                counts = [autoformer_params(r["arch"], NUM_CLASSES[dataset], 32) for r in records]
            else:
                counts = [block_params(r["arch"]) for r in records]
            assert corr["kendall"] == pytest.approx(stats.kendalltau(counts, acc).statistic, abs=1e-9)
            assert corr["pearson"] == pytest.approx(stats.pearsonr(counts, acc).statistic, abs=1e-6)
        assert entry["jcm"] == pytest.approx(np.mean([entry["datasets"][c]["kendall"] for c in COLUMNS]))
    pngs = sorted((out / "plots").glob("*.png"))
    assert len(pngs) == 6
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1000 for p in pngs)
    assert "JCM" in stdout and "params" in stdout


@pytest.mark.parametrize("proxy", BAD_PROXIES)
def test_rank_runner_bad_proxy(rank_runs, proxy):
    proc, out = rank_runs[proxy]
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 2, stderr[-1000:]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --proxy"), stderr
    assert stderr.endswith("\n") and stderr.count("\n") == 1
    assert "Traceback" not in stderr and stdout == ""
    assert not (out / "out.json").exists() and not (out / "cache").exists()
    if proxy == "nope":
        assert "unknown proxy name" in stderr and "params" in stderr and "dss" in stderr
    else:
        assert "mul(MsaWeight, MlpWeight) does not type-check" in stderr


# ------------------------------------------------------------------ known values on the real bench

KNOWN_TAUS = {"c100_kd_acc": 0.55, "flower_kd_acc": 0.70, "chaoyang_kd_acc": 0.32}


def test_params_known_kendall_on_the_autoformer_bench(autoformer_bench, tmp_path):
    records = autoformer_bench.records
    assert len(records) == 100
    # the hand count is the direct baseline's count: check it on one arch of every width
    # (built at 224 px with 100 classes on the meta device: no memory, no forward)
    for d in (192, 216, 240):
        arch = next(r["arch"] for r in records if r["arch"]["hidden_dim"] == d)
        with torch.device("meta"):
            model = build_model("autoformer", arch, 100, 224)
        assert score_baseline("params", model, torch.zeros(1, 3, 224, 224), torch.zeros(1), "all") \
            == autoformer_params(arch, 100, 224)
        assert score_baseline("params", model, None, None, "blocks") == block_params(arch)
    # and through vit_space.scoring.baseline_scores (cached on disk) for two archs at 32 px
    archs = [records[0]["arch"], records[1]["arch"]]
    cfg = StatsConfig(batch_size=2, img_size=32)
    got = baseline_scores(["params"], "autoformer", archs, ["c100"], cfg, tmp_path, progress=False)
    assert got["params"]["c100"].tolist() == [autoformer_params(a, 100, 32) for a in archs]

    counts = [autoformer_params(r["arch"], 100, 224) for r in records]
    taus = {c: stats.kendalltau(counts, [r[c] for r in records]).statistic for c in KNOWN_TAUS}
    print("params Kendall tau on the 100 AutoFormer archs:", {c: round(t, 4) for c, t in taus.items()})
    for column, expect in KNOWN_TAUS.items():
        assert abs(taus[column] - expect) <= 0.05, (column, taus[column])
    # the block-weight count ranks the archs the same way
    blocks = [block_params(r["arch"]) for r in records]
    for column in KNOWN_TAUS:
        assert stats.kendalltau(blocks, [r[column] for r in records]).statistic == pytest.approx(taus[column])


def test_average_ranks_are_scipys():
    """jcm.average_ranks gives scipy.stats.rankdata's default ranks exactly, ties and NaN too."""
    from scipy.stats import rankdata

    from vit_space.scoring.jcm import average_ranks
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 60))
        x = rng.integers(0, int(rng.integers(1, 20)), n) * rng.choice([1.0, 0.37])
        np.testing.assert_array_equal(average_ranks(x), rankdata(x))
    x = np.array([3.0, np.nan, 1.0])
    np.testing.assert_array_equal(average_ranks(x), rankdata(x))  # all NaN
    np.testing.assert_array_equal(average_ranks([2.0, 1.0, 2.0]), [2.5, 1.0, 2.5])
