"""The JCM ceiling and bootstrap interval (vit_space.scoring.ceiling), and their place in every
report: rank.py's JSON and table, an evolution's best.json, printout and jcm.png, and the
discovery benchmark's table. Brute force over every strict and every tied ranking of 6 archs is
the reference of the ceiling; explicit resamples scored by jcm.py that of the bootstrap."""
import itertools
import json

import numpy as np
import pytest

from vit_space.data.bench import column_for
from vit_space.scoring.ceiling import (ENUMERATE_MAX, EXACT_MAX, bootstrap_jcm, bootstrap_values,
                                       borda_scores, ceiling_share, jcm_ceiling)
from vit_space.scoring.evaluator import JCMSettings, result_from_scores
from vit_space.scoring.jcm import WORST, correlations, jcm

N_SMALL = 6
assert N_SMALL <= ENUMERATE_MAX <= EXACT_MAX


def proxy_jcm(scores, accuracies) -> float:
    """JCM of one score vector used for every column, through the evaluator's own path."""
    return result_from_scores({c: np.asarray(scores, float) for c in accuracies}, accuracies,
                              JCMSettings()).jcm


def brute_force(rows: np.ndarray, accuracies: dict) -> np.ndarray:
    """JCM of every candidate score row at once (tau-b from sign matrices, as jcm.py defines it:
    per column over the archs with a known accuracy; WORST where a row is constant there)."""
    taus, invalid = [], np.zeros(len(rows), dtype=bool)
    for values in accuracies.values():
        a = np.array([np.nan if v is None else v for v in values])
        known = ~np.isnan(a)
        r, a = rows[:, known], a[known]
        dx = np.sign(r[:, :, None] - r[:, None, :])
        dy = np.sign(a[:, None] - a[None, :])
        den = np.sqrt(np.abs(dx).sum((1, 2)) * np.abs(dy).sum())
        invalid |= den == 0
        taus.append((dx * dy).sum((1, 2)) / np.where(den > 0, den, 1))
    return np.where(invalid, WORST, np.mean(taus, 0))


def instance(rng, n, p_none=0.1, decimals=None) -> dict:
    """Three accuracy columns of n archs: a shared quality plus noise, rounded so that ties occur,
    some entries unknown; redrawn until every column is a valid one (>= 3 known, not constant)."""
    while True:
        quality = rng.normal(size=n)
        acc = {}
        for c in ("c100_kd_acc", "flower_kd_acc", "chaoyang_kd_acc"):
            values = np.round(quality + rng.normal(scale=rng.uniform(0.3, 1.5), size=n),
                              rng.integers(0, 2) if decimals is None else decimals)
            acc[c] = [None if rng.random() < p_none else float(v) for v in values]
        known = [[v for v in col if v is not None] for col in acc.values()]
        if all(len(k) >= 3 and len(set(k)) > 1 for k in known):
            return acc


@pytest.fixture(scope="module")
def rankings():
    """Every strict ranking (720) and every ranking with ties allowed (4683) of 6 archs."""
    strict = np.array(list(itertools.permutations(range(N_SMALL))), dtype=float)
    tied = np.array([p for p in itertools.product(range(N_SMALL), repeat=N_SMALL)
                     if set(p) == set(range(max(p) + 1))], dtype=float)
    assert len(strict) == 720 and len(tied) == 4683
    return strict, tied


def test_brute_force_reference_is_jcm(rankings):
    """The test's vectorised reference agrees with jcm.py on sampled rankings, ties and None."""
    rng = np.random.default_rng(5)
    acc = instance(rng, N_SMALL, p_none=0.2)
    _, tied = rankings
    rows = tied[rng.choice(len(tied), 40, replace=False)]
    expected = [jcm({c: correlations(r, a) for c, a in acc.items()}) for r in rows]
    assert brute_force(rows, acc) == pytest.approx(expected, abs=1e-12)


def test_ceiling_is_the_brute_force_optimum_on_six_archs(rankings):
    """>= every strict ranking (the requirement), = the best strict one (`strict`) and = the best
    of every ranking with ties (`value`), with the JCM of the returned scores being the value."""
    strict_rows, tied_rows = rankings
    rng = np.random.default_rng(0)
    ties_won = 0
    for _ in range(40):
        acc = instance(rng, N_SMALL)
        c = jcm_ceiling(acc)
        best_strict, best_tied = brute_force(strict_rows, acc).max(), brute_force(tied_rows, acc).max()
        assert c.value >= best_strict - 1e-12
        assert c.strict == pytest.approx(best_strict, abs=1e-12)
        assert c.value == pytest.approx(best_tied, abs=1e-12)
        assert proxy_jcm(c.scores, acc) == pytest.approx(c.value, abs=1e-12)
        ties_won += best_tied > best_strict + 1e-9
    assert ties_won > 0  # like with like: with tau-b a tie can beat every strict ranking


def test_search_alone_on_six_archs(rankings):
    """Without the exact shortcuts (subset DP, enumeration) the local search and tie cuts still
    beat or match every strict ranking and reach the tied optimum on nearly every instance."""
    strict_rows, tied_rows = rankings
    rng = np.random.default_rng(1)
    hits, total = 0, 40
    for _ in range(total):
        acc = instance(rng, N_SMALL, p_none=0.05)
        c = jcm_ceiling(acc, exact_max=0, enumerate_max=0)
        assert c.value >= brute_force(strict_rows, acc).max() - 1e-12
        assert c.value >= c.strict and proxy_jcm(c.scores, acc) == pytest.approx(c.value, abs=1e-12)
        hits += c.value >= brute_force(tied_rows, acc).max() - 1e-12
    assert hits >= 0.9 * total


def test_one_column_with_ties_is_its_own_ceiling():
    """One column with two tied pairs: the column itself scores 1, the best strict order
    sqrt(1 - 2/28) (tau-b's denominator counts the column's untied pairs only)."""
    acc = {"c100_kd_acc": [1.0, 1.0, 2.0, 3.0, 3.0, 4.0, 5.0, 6.0]}
    c = jcm_ceiling(acc)
    assert c.value == pytest.approx(1.0) and c.strict == pytest.approx(np.sqrt(26 / 28))
    searched = jcm_ceiling(acc, exact_max=0, enumerate_max=0)
    assert searched.value == pytest.approx(1.0) and searched.strict == pytest.approx(np.sqrt(26 / 28))


def test_never_below_any_one_score_proxy():
    """On 30-arch instances (searched, not exact) no proxy beats the ceiling: random scores,
    tied (rounded) ones, noisy copies of the truth, Borda's order and each column itself."""
    rng = np.random.default_rng(2)
    for _ in range(4):
        acc = instance(rng, 30, decimals=1)
        c = jcm_ceiling(acc)
        assert c.value >= c.strict and proxy_jcm(c.scores, acc) == pytest.approx(c.value, abs=1e-12)
        truth = np.nanmean([[np.nan if v is None else v for v in col] for col in acc.values()], 0)
        proxies = [rng.normal(size=30) for _ in range(20)]
        proxies += [np.round(rng.normal(size=30), 0) for _ in range(20)]
        proxies += [np.round(truth + rng.normal(scale=s, size=30), 1) for s in (0.05, 0.2, 0.5, 1.0)]
        proxies += [borda_scores(acc), truth]
        for col in acc.values():  # the column as the proxy, unknown entries filled at random
            proxies.append(np.array([rng.normal() if v is None else v for v in col]))
        for p in proxies:
            assert proxy_jcm(p, acc) <= c.value + 1e-12


@pytest.mark.parametrize("space", ["autoformer", "pit"])
def test_bench_ceiling_bounds_the_columns_themselves(space, autoformer_bench, pit_bench):
    """The test part of split 0: above the best strict ranking, each accuracy column and Borda's
    order used as the proxy, and below 1."""
    bench = {"autoformer": autoformer_bench, "pit": pit_bench}[space]
    indices = bench.split("test", 0)
    columns = [column_for(d, "kd", space) for d in ("c100", "flowers", "chaoyang")]
    acc = {c: bench.accuracies(indices, c) for c in columns}
    c = jcm_ceiling(acc)
    assert 0 < c.strict <= c.value < 1
    for col in columns:
        assert proxy_jcm(acc[col], acc) < c.value
    assert proxy_jcm(borda_scores(acc), acc) < c.strict


def test_ceiling_share():
    assert ceiling_share(0.5, 0.8) == pytest.approx(0.625)
    assert ceiling_share(0.5, WORST) is None and ceiling_share(0.5, None) is None


def test_degenerate_accuracies_give_worst():
    """A column with one value everywhere makes every proxy WORST: so is the ceiling."""
    acc = {"a": [1.0, 1.0, 1.0, 1.0], "b": [1.0, 2.0, 3.0, 4.0]}
    assert jcm_ceiling(acc).value == WORST and ceiling_share(0.2, jcm_ceiling(acc).value) is None


# ------------------------------------------------------------------------------- bootstrap

def correlated(n, seed, noise=1.0, p_none=0.0):
    """Scores and accuracies of n archs, correlated through a shared quality."""
    rng = np.random.default_rng(seed)
    quality = rng.normal(size=n)
    acc, scores = {}, {}
    for c in ("c100_kd_acc", "flower_kd_acc", "chaoyang_kd_acc"):
        a = np.round(quality + rng.normal(scale=0.5, size=n), 1)
        acc[c] = [None if rng.random() < p_none else float(v) for v in a]
        scores[c] = quality + rng.normal(scale=noise, size=n)
    return scores, acc


def test_bootstrap_is_jcm_on_explicit_resamples():
    """Each resample's value is jcm.py's JCM of the archs drawn by default_rng(seed) (repeated
    archs included: tau-b treats them as ties), None accuracies left out per column."""
    scores, acc = correlated(25, seed=3, p_none=0.1)
    values = bootstrap_values(scores, acc, n_resamples=30, seed=7)
    draws = np.random.default_rng(7).integers(0, 25, size=(30, 25))
    for value, d in zip(values, draws):
        per = {c: correlations(np.asarray(scores[c])[d], [acc[c][i] for i in d]) for c in acc}
        assert value == pytest.approx(jcm(per), abs=1e-12)


def test_bootstrap_interval_contains_the_estimate_and_narrows():
    for seed in range(3):
        small, large = correlated(30, seed), correlated(300, seed)
        widths = []
        for scores, acc in (small, large):
            point = result_from_scores(scores, acc, JCMSettings()).jcm
            low, high = bootstrap_jcm(scores, acc)
            assert low < point < high
            widths.append(high - low)
        assert widths[1] < 0.5 * widths[0]  # ~sqrt(30/300) = 0.32 expected
        assert 0.05 < widths[0] < 0.6


def test_bootstrap_is_seeded():
    scores, acc = correlated(40, seed=1)
    assert bootstrap_jcm(scores, acc, seed=4) == bootstrap_jcm(scores, acc, seed=4)
    assert bootstrap_jcm(scores, acc, seed=4) != bootstrap_jcm(scores, acc, seed=5)
    low, high = bootstrap_jcm(scores, acc, level=0.5)
    wide = bootstrap_jcm(scores, acc, level=0.99)
    assert wide[0] < low < high < wide[1]


def test_bootstrap_of_an_invalid_proxy_is_worst():
    scores, acc = correlated(20, seed=2)
    scores["c100_kd_acc"] = np.ones(20)  # constant on one column: JCM is WORST
    assert bootstrap_jcm(scores, acc) == (WORST, WORST)
    scores["c100_kd_acc"] = np.where(np.arange(20) == 3, np.nan, 1.0)
    assert bootstrap_jcm(scores, acc) == (WORST, WORST)


# --------------------------------------------------------------------------------- reports

@pytest.fixture(scope="module")
def tiny_argv(session_cache, tiny_cfg):
    """Data flags of tiny runs sharing the session cache: 12 AutoFormer archs, c100, 32 px."""
    return ["--archs", "12", "--img-size", str(tiny_cfg.img_size), "--batch-size", str(tiny_cfg.batch_size),
            "--seed", str(tiny_cfg.seed), "--datasets", "c100", "--cache", str(session_cache.root),
            "--backend", "sequential", "--quiet"]


def split_accuracies(bench, split, n=12):
    indices = bench.head(n).split(split, 0)
    return {"c100_kd_acc": bench.head(n).accuracies(indices, "c100_kd_acc")}


def test_rank_report_and_table(tiny_argv, autoformer_bench, tmp_path, capsys):
    from runners import rank
    report_path, scores_path = tmp_path / "report.json", tmp_path / "scores.json"
    rank.main(tiny_argv + ["--proxy", "mean_abs(msa_g);mean_abs(mlp_g)", "--split", "test",
                           "--json", str(report_path), "--scores", str(scores_path)])
    out = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    acc = split_accuracies(autoformer_bench, "test")
    c = jcm_ceiling(acc)
    assert report["ceiling"] == pytest.approx(c.value) and report["ceiling_strict"] == pytest.approx(c.strict)
    rows = json.loads(scores_path.read_text())
    for name, entry in report["proxies"].items():
        scores = {"c100_kd_acc": np.array([r["score"] for r in rows if r["proxy"] == name])}
        assert entry["jcm_interval"] == pytest.approx(list(bootstrap_jcm(scores, acc)), abs=1e-12)
        assert entry["ceiling_share"] == pytest.approx(entry["jcm"] / report["ceiling"])
        assert entry["jcm"] <= report["ceiling"] + 1e-12
        low, high = entry["jcm_interval"]
        assert f"[{low:6.3f}, {high:6.3f}]" in out and f"{entry['ceiling_share']:6.3f}" in out
    assert "JCM 95% interval" in out and "share" in out
    assert f"ceiling (the best JCM of one score per arch on these {report['n']} archs, ties allowed): " \
           f"{report['ceiling']:.3f}" in out


def test_evolution_reports_ceiling_interval_and_share(tiny_argv, autoformer_bench, tmp_path, capsys,
                                                     monkeypatch):
    import matplotlib.pyplot as plt
    from runners import evolve
    figures = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figures.append(fig))  # keep jcm.png's figure
    out = tmp_path / "run"
    evolve.main(tiny_argv + ["--pop", "4", "--iters", "3", "--folds", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    best = json.loads((out / "best.json").read_text())
    ceilings = {}
    for part in ("search", "test"):
        entry, acc = best[part], split_accuracies(autoformer_bench, part)
        c = jcm_ceiling(acc)
        ceilings[part] = c.value
        assert entry["ceiling"] == pytest.approx(c.value) and entry["ceiling_strict"] == pytest.approx(c.strict)
        assert entry["ceiling_share"] == pytest.approx(entry["jcm"] / c.value)
        low, high = entry["jcm_interval"]
        assert low <= high and -1 <= low and high <= 1
        assert best["beside"][part]["ceiling"] == entry["ceiling"]
        assert (f"{part:6s} JCM {entry['jcm']:.4f}, 95% interval [{low:.4f}, {high:.4f}]; "
                f"ceiling {c.value:.4f}") in printed
    assert f"test   JCM {best['test']['jcm']:.4f}  tied pairs" in printed  # the line before stays
    # the interval is the bootstrap of the answer's own scores: recompute them on the test part
    from gp.run import split_evaluator
    from primitives import parse_formula
    from vit_space.setup_run import make_setup
    from vit_space.stats.terminals import vit_primitive_set
    setup = make_setup(archs=12, img_size=32, batch_size=4, seed=0, datasets="c100",
                       cache=tiny_argv[tiny_argv.index("--cache") + 1], backend="sequential", quiet=True)
    test_eval = split_evaluator(setup, "test")
    result = test_eval.evaluate(parse_formula(best["formula"], vit_primitive_set()))
    assert result.jcm == pytest.approx(best["test"]["jcm"], abs=1e-12)
    assert best["test"]["jcm_interval"] == pytest.approx(
        list(bootstrap_jcm(result.scores, test_eval.accuracies)), abs=1e-12)
    # jcm.png draws the search part's ceiling as a labelled horizontal line
    lines = [line for fig in figures if fig is not None for ax in fig.axes for line in ax.get_lines()
             if line.get_label().startswith("ceiling")]
    assert lines and list(lines[-1].get_ydata()) == pytest.approx([ceilings["search"]] * 2)
    assert f"{ceilings['search']:.3f}" in lines[-1].get_label()
    monkeypatch.undo()
    plt.close("all")


def test_discovery_table_shows_ceilings(autoformer_bench):
    """The table's second part: each method's splits' mean test-part ceiling (from the bench
    accuracies alone), its share of it, and the interval (the mean of the splits' bounds over several)."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "discovery.py"
    spec = importlib.util.spec_from_file_location("discovery", path)
    discovery = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(discovery)
    settings = {"archs": 12, "acc": "kd", "datasets": ["c100"]}
    ceilings = discovery.test_ceilings("autoformer", settings, [0, 1])
    for split in (0, 1):
        indices = autoformer_bench.head(12).split("test", split)
        acc = {"c100_kd_acc": autoformer_bench.head(12).accuracies(indices, "c100_kd_acc")}
        assert ceilings[split].value == pytest.approx(jcm_ceiling(acc).value)
    base = {"evaluations": 0, "seconds": None, "formula": None, "search_tied": 0.0, "test_tied": 0.0}
    rows = [{**base, "split_seed": 0, "method": "params", "search_jcm": 0.5, "test_jcm": 0.4,
             "test_interval": [0.2, 0.6]},
            {**base, "split_seed": 1, "method": "params", "search_jcm": 0.3, "test_jcm": 0.3},
            {**base, "split_seed": 0, "method": "nwot", "search_jcm": 0.2, "test_jcm": 0.1,
             "test_interval": [-0.1, 0.3]}]
    text = discovery.table(rows, "autoformer", ceilings)
    assert text.startswith(discovery.table(rows, "autoformer"))  # the old lines stay as they were
    c0, c1 = ceilings[0].value, ceilings[1].value
    share = np.mean([0.4 / c0, 0.3 / c1])
    assert f"| params | 2 | {np.mean([c0, c1]):.3f} ± {np.std([c0, c1], ddof=1):.3f} | {share:.3f} ± " in text
    assert f"| nwot | 1 | {c0:.3f} ± 0.000 | {0.1 / c0:.3f} ± 0.000 | [-0.100, 0.300] |" in text
    # over several splits, the mean of the bounds of those that have an interval
    assert f"{share:.3f} ± {np.std([0.4 / c0, 0.3 / c1], ddof=1):.3f} | mean of 1: [0.200, 0.600] |" in text
    rows[1]["test_interval"] = [0.0, 0.5]
    assert "| mean of 2: [0.100, 0.550] |" in discovery.table(rows, "autoformer", ceilings)
    assert "test-part ceiling over the 2 split(s): " in text


def test_joint_search_parts_average_the_spaces():
    """One tree on two spaces: the part's ceiling is the mean of the spaces' ceilings (its JCM is
    the mean of their JCMs), its interval that of the mean of per-space bootstrap JCMs."""
    from types import SimpleNamespace

    from gp.run import part_ceiling, part_interval, space_intervals
    from vit_space.scoring.ceiling import percentile_interval
    from vit_space.scoring.joint import JointEvaluator
    spaces = {}
    for k, space in enumerate(("autoformer", "pit")):
        scores, acc = correlated(20, seed=10 + k)
        spaces[space] = SimpleNamespace(
            indices=list(range(20)), settings=JCMSettings(), accuracies=acc, own_scores=scores,
            evaluate_scores=lambda s, acc=acc: result_from_scores(s, acc, JCMSettings()))
    joint = JointEvaluator(spaces)
    scores = {f"{space}/{c}": v for space, e in spaces.items() for c, v in e.own_scores.items()}
    result = joint.evaluate_scores(scores)
    c = part_ceiling(joint)
    each = [jcm_ceiling(e.accuracies) for e in spaces.values()]
    assert c.value == pytest.approx(np.mean([x.value for x in each]))
    assert c.strict == pytest.approx(np.mean([x.strict for x in each]))
    low, high = part_interval(joint, result)
    assert low < result.jcm < high
    expected = np.mean([bootstrap_values(e.own_scores, e.accuracies) for e in spaces.values()], 0)
    assert [low, high] == pytest.approx(list(percentile_interval(expected)))
    # each space's own interval: the one its scores get on that space alone
    assert space_intervals(joint, scores) == {
        space: pytest.approx(list(bootstrap_jcm(e.own_scores, e.accuracies))) for space, e in spaces.items()}
