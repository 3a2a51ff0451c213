"""Training-free architecture search: budgets, strategies, on-the-fly scoring, arch files, the
within-bench check and the runner, all on tiny settings (32 px, batch 2, a handful of archs)."""

import json
import math
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

import torch

from vit_space.core.errors import BadInput
from vit_space.data.spaces import SPACES, arch_key
from vit_space.models.costs import arch_cost, counted_cost
from vit_space.scoring.proxies import resolve_proxy
from vit_space.scoring.table import StatsTable
from vit_space.search.candidates import ArchScorer, proxy_needs
from vit_space.search.constraints import Constraints, crossover_archs, mutate_arch, sample_fitting
from vit_space.search.genes import active_genes, encode, load_arch, smallest_arch
from vit_space.search.report import within_bench
from vit_space.search.strategies import ArchSearchConfig, ensure_arch_classes, make_arch_toolbox, search_archs
from vit_space.setup_run import DataSetup
from vit_space.stats.cache import StatsCache
from vit_space.stats.statistics import StatsConfig, extract_stats

ROOT = Path(__file__).resolve().parents[1]
CFG = StatsConfig(batch_size=2, img_size=32, seed=0)
BUDGET = Constraints(max_params=6e6)


@pytest.fixture(scope="module")
def params_scorer(session_cache):
    return ArchScorer(resolve_proxy("params"), "autoformer", CFG, session_cache)


def without_time(result):
    return {k: v for k, v in result.items() if k != "seconds"}


# ---------------------------------------------------------------- costs and budgets

def test_analytic_cost_matches_the_built_model_and_flops_baseline():
    rng = random.Random(5)
    for space, img in (("autoformer", 224), ("autoformer", 32), ("pit", 224), ("pit", 32)):
        arch = smallest_arch(space) if img == 32 else SPACES[space].sample(rng)
        if space == "pit":
            arch["num_heads"] = sorted(arch["num_heads"])  # buildable: widths divide the next
        assert arch_cost(space, arch, img, 100) == counted_cost(space, arch, img, 100), (space, img)
    unbuildable = {"base_dim": 16, "mlp_ratio": 2, "depth": [1, 4, 2], "num_heads": [8, 2, 4]}
    with pytest.raises(BadInput, match="num_heads"):
        arch_cost("pit", unbuildable)
    assert not Constraints().fits("pit", unbuildable)


def test_random_search_params_within_budget_and_deterministic(params_scorer, session_cache):
    config = ArchSearchConfig(strategy="random", samples=5, top=5, seed=1)
    result = search_archs(params_scorer, BUDGET, config)
    assert set(result) >= {"space", "proxy", "strategy", "seed", "seconds", "top"}
    assert (result["space"], result["proxy"], result["strategy"], result["seed"]) == \
        ("autoformer", "params", "random", 1)
    top = result["top"]
    assert len(top) == 5 and set(top[0]) == {"arch", "score", "params", "flops"}
    for entry in top:
        SPACES["autoformer"].validate(entry["arch"])
        assert entry["params"] <= 6e6
        assert (entry["params"], entry["flops"]) == arch_cost("autoformer", entry["arch"])
    assert [e["score"] for e in top] == sorted((e["score"] for e in top), reverse=True)
    fresh = ArchScorer(resolve_proxy("params"), "autoformer", CFG, session_cache)
    again = search_archs(fresh, BUDGET, config)
    assert json.dumps(without_time(again)) == json.dumps(without_time(result))


def test_unsatisfiable_budgets_are_bad_input(params_scorer):
    with pytest.raises(BadInput, match=r"--max-params 100000: no architecture of the autoformer "
                                       r"space fits \(smallest has 5100196 params\)"):
        search_archs(params_scorer, Constraints(max_params=1e5), ArchSearchConfig(samples=2))
    with pytest.raises(BadInput, match="--max-flops 1e\\+06: no architecture .* FLOPs"):
        Constraints(max_params=6e6, max_flops=1e6).check_feasible("autoformer")
    with pytest.raises(BadInput, match="--max-params -1: expected a positive number"):
        Constraints(max_params=-1).check_feasible("pit")
    with pytest.raises(BadInput, match="--strategy"):
        ArchSearchConfig(strategy="grid").validate()


def test_max_flops_respected_by_sampling():
    budget = Constraints(max_params=6e6, max_flops=2.5e9)
    archs = sample_fitting("autoformer", random.Random(0), budget, 40)
    assert len(archs) == 40 and len({arch_key(a) for a in archs}) == 40
    for arch in archs:
        params, flops = arch_cost("autoformer", arch)
        assert params <= 6e6 and flops <= 2.5e9
    pit = sample_fitting("pit", random.Random(0), Constraints(max_params=2e6), 30)
    assert all(Constraints(max_params=2e6).fits("pit", a) for a in pit)


# ---------------------------------------------------------------- evolution operators

@pytest.mark.parametrize("space,budget", [("autoformer", Constraints(6e6, 2.6e9)),
                                          ("pit", Constraints(3e6, 1.5e9))])
def test_mutation_and_crossover_stay_valid_and_within_budget(space, budget):
    rng = random.Random(11)
    pool = sample_fitting(space, rng, budget, 20)
    changed = 0
    for trial in range(150):
        a, b = rng.choice(pool), rng.choice(pool)
        child = mutate_arch(space, a, rng, budget)
        SPACES[space].validate(child)
        assert budget.fits(space, child)
        changed += arch_key(child) != arch_key(a)
        for c in crossover_archs(space, a, b, rng, budget):
            SPACES[space].validate(c)
            assert budget.fits(space, c)
            genes_c, genes_a, genes_b = (encode(space, x, rng) for x in (c, a, b))
            for i in active_genes(space, c)[:2]:  # width and depth/ratio come from a parent
                assert genes_c[i] in (genes_a[i], genes_b[i])
        pool.append(child)
    assert changed > 100  # mutation does change archs, not just fall back to the parent


def test_toolbox_and_evolve_determinism(params_scorer):
    individual = ensure_arch_classes()
    assert ensure_arch_classes() is individual
    tb = make_arch_toolbox("autoformer", params_scorer, BUDGET, ArchSearchConfig(), random.Random(0))
    ind = tb.mutate(tb.individual(smallest_arch("autoformer")))
    assert isinstance(ind, individual) and hasattr(ind, "fitness")
    config = ArchSearchConfig(strategy="evolve", pop=4, gens=2, top=3, seed=3)
    first = search_archs(params_scorer, BUDGET, config)
    second = search_archs(params_scorer, BUDGET, config)
    assert without_time(first) == without_time(second)
    assert first["strategy"] == "evolve" and len(first["top"]) == 3
    for entry in first["top"]:
        SPACES["autoformer"].validate(entry["arch"])
        assert entry["params"] <= 6e6


# ---------------------------------------------------------------- each candidate costs what its proxy needs

def test_proxy_needs_classifies_baselines_and_trees():
    needs = {name: proxy_needs(resolve_proxy(name)) for name in
             ("params", "flops", "synflow", "nwot", "snip", "add(msa_numel, mlp_numel)",
              "mul(one, msa_numel)", "sum(msa_w)", "nuclear(matmul(eye_mlp_w, mlp_w))",
              "sum(step(abs(minmax_norm(msa_g))))", "sum(matmul(eye_msa_a, msa_a))")}
    assert needs == {"params": "cost", "flops": "cost", "synflow": "weights", "nwot": "data",
                     "snip": "data", "add(msa_numel, mlp_numel)": "structure",
                     "mul(one, msa_numel)": "structure", "sum(msa_w)": "weights",
                     "nuclear(matmul(eye_mlp_w, mlp_w))": "weights",
                     "sum(step(abs(minmax_norm(msa_g))))": "data", "sum(matmul(eye_msa_a, msa_a))": "data"}


def test_params_and_flops_are_counted_without_building(monkeypatch, tmp_path):
    import vit_space.search.candidates as candidates
    from vit_space.models.builders import build_model
    from vit_space.scoring.baselines import BASELINES
    archs = sample_fitting("autoformer", random.Random(4), BUDGET, 3)
    built = {name: [BASELINES[name].fn(build_model("autoformer", a, 100, 32), torch.zeros(1, 3, 32, 32), None)
                    for a in archs] for name in ("params", "flops")}
    monkeypatch.setattr(candidates, "build_model", lambda *a, **k: pytest.fail("a model was built"))
    monkeypatch.setattr(candidates, "meta_model", lambda *a, **k: pytest.fail("a model was built"))
    for name in ("params", "flops"):
        scorer = ArchScorer(resolve_proxy(name), "autoformer", CFG, StatsCache(tmp_path))
        assert scorer.many(archs) == built[name]
    assert not list(tmp_path.iterdir())


def test_size_trees_read_a_meta_model_and_equal_extraction(tmp_path):
    cache = StatsCache(tmp_path)
    proxy = resolve_proxy("add(msa_numel, mlp_numel)")
    config = ArchSearchConfig(samples=3, top=3, seed=2)
    result = search_archs(ArchScorer(proxy, "autoformer", CFG, cache), BUDGET, config)
    assert (cache.misses, cache.hits) == (0, 0) and not list(tmp_path.iterdir())
    for entry in result["top"]:  # the tree counts the blocks' weight elements exactly
        arch, dim = entry["arch"], entry["arch"]["hidden_dim"]
        assert entry["score"] == sum(4 * dim * dim + 2 * dim * int(dim * r) for r in arch["mlp_ratio"])
    pit = sample_fitting("pit", random.Random(1), Constraints(max_params=3e6), 2)
    extracted = [float(StatsTable([extract_stats("pit", a, "c100", CFG)]).scores(proxy.tree)[0]) for a in pit]
    assert ArchScorer(proxy, "pit", CFG, cache).many(pit) == extracted


@pytest.mark.parametrize("space", ["autoformer", "pit"])
def test_weight_trees_run_no_batch_and_equal_extraction(space, tmp_path, monkeypatch):
    """A tree over weights draws the same sketch rows as a full extraction (the token draws
    between them included), without the batch or a backward."""
    import vit_space.search.candidates as candidates
    formula = "add(mul(nuclear(msa_w), msa_numel), logdet_gram(matmul(eye_mlp_w, mlp_w)))"
    proxy = resolve_proxy(formula)
    archs = sample_fitting(space, random.Random(3), Constraints(max_params=4e6), 3)
    full = [float(StatsTable([extract_stats(space, a, "c100", CFG)]).scores(proxy.tree)[0]) for a in archs]
    monkeypatch.setattr(candidates, "make_batch", lambda *a, **k: pytest.fail("the batch was made"))
    monkeypatch.setattr(candidates, "extract_stats", lambda *a, **k: pytest.fail("a full extraction"))
    scorer = ArchScorer(proxy, space, CFG, StatsCache(tmp_path))
    assert scorer.needs == "weights"
    assert scorer.many(archs) == full  # bit for bit
    assert not list(tmp_path.iterdir())


def test_data_trees_keep_statistics_in_memory_unless_keep_stats(tmp_path):
    proxy = resolve_proxy("sum(step(abs(minmax_norm(msa_g))))")
    config = ArchSearchConfig(samples=3, top=3, seed=2)
    cache = StatsCache(tmp_path / "cache")
    in_memory = search_archs(ArchScorer(proxy, "autoformer", CFG, cache), BUDGET, config)
    assert not (tmp_path / "cache").exists()  # nothing written into the shared cache
    kept = search_archs(ArchScorer(proxy, "autoformer", CFG, cache, keep_stats=True), BUDGET, config)
    assert (cache.misses, cache.hits) == (3, 0) and len(list(tmp_path.rglob("*.joblib"))) == 3
    assert without_time(kept) == without_time(in_memory)
    again = search_archs(ArchScorer(proxy, "autoformer", CFG, cache), BUDGET, config)  # reads them
    assert without_time(again) == without_time(in_memory)
    assert len(list(tmp_path.rglob("*.joblib"))) == 3


def test_parallel_scoring_equals_sequential(tmp_path):
    archs = sample_fitting("autoformer", random.Random(7), BUDGET, 4)
    scores = {}
    for jobs in (1, 2):
        scorer = ArchScorer(resolve_proxy("nwot"), "autoformer", CFG, StatsCache(tmp_path), n_jobs=jobs)
        scores[jobs] = scorer.many(archs + archs[:1])
        assert len(scorer.memo) == 4
    assert scores[1] == scores[2] and all(math.isfinite(v) for v in scores[1])


# ---------------------------------------------------------------- score ties

def test_ties_are_broken_by_the_declared_key(session_cache):
    proxy = resolve_proxy("add(one, one)")  # twice the depth: many ties
    results = {tie: search_archs(ArchScorer(proxy, "autoformer", CFG, session_cache), BUDGET,
                                 ArchSearchConfig(samples=30, top=30, seed=0, tie_key=tie))
               for tie in ("params", "flops", "none")}
    for tie, result in results.items():
        assert result["tie_key"] == tie
        top = result["top"]
        best = top[0]["score"]
        assert result["tied_at_top"] == sum(e["score"] == best for e in top) > 1
        for a, b in zip(top, top[1:]):
            assert a["score"] >= b["score"]
            if a["score"] == b["score"]:
                if tie == "none":
                    assert arch_key(a["arch"]) < arch_key(b["arch"])
                else:
                    assert a[tie] >= b[tie]
    assert results["params"]["top"][0]["params"] == max(e["params"] for e in results["params"]["top"]
                                                        if e["score"] == results["params"]["top"][0]["score"])
    with pytest.raises(BadInput, match="--tie-key size"):
        ArchSearchConfig(tie_key="size").validate()


# ---------------------------------------------------------------- arch files

def test_load_arch_reads_records_and_names_bad_fields(tmp_path):
    arch = smallest_arch("autoformer")
    bare, wrapped = tmp_path / "bare.json", tmp_path / "wrapped.json"
    bare.write_text(json.dumps(arch))
    wrapped.write_text(json.dumps({"arch": arch, "score": 1.0}))
    assert load_arch(bare, "autoformer") == arch == load_arch(wrapped, "autoformer")
    cases = {"{not json": "not JSON",
             json.dumps({**arch, "hidden_dim": 100}): r"hidden_dim: 100 is outside the space",
             json.dumps({"arch": {**arch, "mlp_ratio": [3.5] * 11 + [5.0]}}): r"field arch\.mlp_ratio\[11\]",
             json.dumps({**arch, "width": 3}): "unknown field 'width'",
             json.dumps({k: v for k, v in arch.items() if k != "depth"}): "missing field 'depth'"}
    for text, message in cases.items():
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(BadInput, match=message):
            load_arch(bad, "autoformer")
    with pytest.raises(BadInput, match="cannot be read"):
        load_arch(tmp_path / "missing.json", "autoformer")


# ---------------------------------------------------------------- within the bench

def test_within_bench_reports_top1_percentile_and_best(autoformer_bench, session_cache):
    setup = DataSetup(autoformer_bench.head(10), ["c100", "flowers"], "kd", CFG, session_cache,
                      "cpu", 1, "sequential", None, False)
    report = within_bench(setup, resolve_proxy("params"), "test")
    indices = setup.bench.split("test", CFG.seed)
    assert report["n"] == len(indices) == 4 and set(report["datasets"]) == {"c100", "flowers"}
    for dataset, entry in report["datasets"].items():
        accs = setup.bench.accuracies(indices, entry["column"])
        assert 0.0 <= entry["percentile"] <= 100.0
        assert entry["best_acc"] == max(accs) >= entry["top1_acc"]
        assert entry["top1_acc"] == setup.bench.records[entry["top1_index"]][entry["column"]]
        assert entry["percentile"] == 100.0 * (sum(a <= entry["top1_acc"] for a in accs) - 1) / 3
    # the params proxy (32 px, 100 classes on c100) picks the split's largest model
    largest = max(indices, key=lambda i: arch_cost("autoformer", setup.bench.records[i]["arch"], 32)[0])
    assert report["datasets"]["c100"]["top1_index"] == largest
    depth = within_bench(setup, resolve_proxy("add(one, one)"), "test")  # ties broken by #params
    for entry in depth["datasets"].values():
        arch = setup.bench.records[entry["top1_index"]]["arch"]
        deepest = [setup.bench.records[i]["arch"] for i in indices
                   if setup.bench.records[i]["arch"]["depth"] == arch["depth"]]
        assert arch["depth"] == max(setup.bench.records[i]["arch"]["depth"] for i in indices)
        assert entry["tied_at_top"] == len(deepest)
        assert arch_cost("autoformer", arch)[0] == max(arch_cost("autoformer", a)[0] for a in deepest)


# ---------------------------------------------------------------- the runner

def run_search(*args, cache, quiet=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "runners" / "search.py"), *args,
                           "--cache", str(cache)] + (["--quiet"] if quiet else []),
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_runner_shows_progress_with_an_estimate_and_the_tie_key(tmp_path):
    out = tmp_path / "search.json"
    done = run_search("--proxy", "sum(msa_g)", "--max-params", "6e6", "--samples", "3", "--top", "2",
                      "--img-size", "32", "--batch-size", "2", "--datasets", "c100", "--tie-key",
                      "flops", "--json", str(out), cache=tmp_path / "cache", quiet=False)
    assert done.returncode == 0, done.stderr
    assert re.search(r"score candidates: 100%\|.*\| 3/3 \[\d\d:\d\d<\d\d:\d\d", done.stderr), done.stderr
    assert "ties broken by --tie-key flops" in done.stdout
    result = json.loads(out.read_text())
    assert result["tie_key"] == "flops" and result["tied_at_top"] >= 1
    assert not (tmp_path / "cache").exists()  # candidates' statistics stayed in memory
    quiet = run_search("--proxy", "sum(msa_g)", "--max-params", "6e6", "--samples", "2",
                       "--img-size", "32", "--batch-size", "2", "--datasets", "c100",
                       cache=tmp_path / "cache")
    assert quiet.returncode == 0 and "score candidates" not in quiet.stderr


def test_runner_writes_json_and_rejects_bad_input(tmp_path):
    out = tmp_path / "search.json"
    done = run_search("--proxy", "params", "--max-params", "6e6", "--max-flops", "2.5e9",
                      "--samples", "3", "--top", "2", "--img-size", "32", "--batch-size", "2",
                      "--datasets", "c100", "--json", str(out), cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    assert "rank" in done.stdout and "params(M)" in done.stdout
    result = json.loads(out.read_text())
    assert set(result) >= {"space", "proxy", "strategy", "seed", "seconds", "top"}
    assert (result["proxy"], result["strategy"], result["seed"]) == ("params", "random", 0)
    assert len(result["top"]) == 2
    for entry in result["top"]:
        SPACES["autoformer"].validate(entry["arch"])
        assert entry["params"] <= 6e6 and entry["flops"] <= 2.5e9
    bad = run_search("--proxy", "params", "--max-params", "1e5", cache=tmp_path / "cache")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: --max-params 100000: no architecture of the autoformer space fits "
        "(smallest has 5100196 params)"]


@pytest.mark.parametrize("args,message", [
    (["--proxy", "params", "--max-params", "6e6", "--strategy", "grid"], "--strategy grid"),
    (["--proxy", "nope", "--max-params", "6e6"], "--proxy nope"),
    (["--proxy", "params", "--max-params", "6e6", "--pop", "1"], "--pop 1"),
    (["--proxy", "params", "--max-params", "6e6", "--tie-key", "size"], "--tie-key size"),
])
def test_runner_bad_input_is_one_line_exit_2(args, message, capsys, tmp_path):
    from runners.search import main
    with pytest.raises(SystemExit) as exit_info:
        main(args + ["--cache", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
