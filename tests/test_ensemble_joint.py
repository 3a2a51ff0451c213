"""Ensembles rank-average their members; a joint evaluator's JCM is the mean of its spaces' JCMs."""
import numpy as np
import pytest
from scipy.stats import rankdata

from vit_space.scoring.ensemble import rank_average, reference_ranks
from vit_space.scoring.evaluator import JCMSettings, result_from_scores
from vit_space.scoring.joint import JointEvaluator


def test_an_ensemble_of_one_member_ranks_as_the_member():
    rng = np.random.default_rng(0)
    member = {"a": rng.normal(size=30), "b": np.round(rng.normal(size=30), 1)}  # b has ties
    out = rank_average([member])
    for column, values in member.items():
        assert np.array_equal(out[column], rankdata(values))


def test_rank_average_is_the_mean_rank_and_marks_invalid_archs():
    one = {"c": np.array([1.0, 2.0, 3.0, 4.0])}
    two = {"c": np.array([40.0, 30.0, np.nan, 10.0])}
    out = rank_average([one, two])["c"]
    assert np.isnan(out[2])
    # ranks among the three archs both score: one -> 1, 2, 3; two -> 3, 2, 1
    assert np.array_equal(out[[0, 1, 3]], [2.0, 2.0, 2.0])
    with pytest.raises(ValueError):
        rank_average([])


def test_reference_ranks_order_like_the_ranks_among_the_reference():
    rng = np.random.default_rng(1)
    reference = rng.normal(size=50)
    ranks = reference_ranks(reference, reference)
    assert np.array_equal(ranks, rankdata(reference))
    tied = np.array([1.0, 2.0, 2.0, 3.0])
    assert np.array_equal(reference_ranks(tied, tied), rankdata(tied))
    new = np.array([-10.0, 10.0, reference[3], np.nan])
    out = reference_ranks(new, reference)
    assert out[0] == 0.5 and out[1] == 50.5 and out[2] == ranks[3] and np.isnan(out[3])


class FakeEvaluator:
    """Scores a 'tree' (here: a dict of per-column scores) as given."""

    def __init__(self, space, accuracies):
        self.space, self.accuracies, self.settings = space, accuracies, JCMSettings()
        self.indices = list(range(len(next(iter(accuracies.values())))))

    def scores(self, tree):
        return tree[self.space]

    def evaluate_scores(self, scores):
        return result_from_scores(scores, self.accuracies, self.settings)


def test_joint_fitness_is_the_mean_of_the_single_space_fitnesses():
    rng = np.random.default_rng(2)
    acc = {s: {c: list(rng.normal(size=12)) for c in ("x_acc", "y_acc")} for s in ("autoformer", "pit")}
    evaluators = {s: FakeEvaluator(s, acc[s]) for s in acc}
    joint = JointEvaluator(evaluators)
    for _ in range(20):
        tree = {s: {c: rng.normal(size=12) for c in acc[s]} for s in acc}
        single = [evaluators[s].evaluate_scores(tree[s]).jcm for s in acc]
        assert joint.evaluate(tree).jcm == pytest.approx(sum(single) / 2, abs=1e-12)
        assert set(joint.scores(tree)) == {"autoformer/x_acc", "autoformer/y_acc", "pit/x_acc", "pit/y_acc"}
    invalid = {"autoformer": {c: np.full(12, 1.0) for c in acc["autoformer"]},  # constant: WORST
               "pit": {c: rng.normal(size=12) for c in acc["pit"]}}
    assert joint.evaluate(invalid).jcm == -1.0


def test_joint_evaluation_needs_equal_split_sizes():
    a = FakeEvaluator("autoformer", {"x": [1.0, 2.0, 3.0]})
    b = FakeEvaluator("pit", {"x": [1.0, 2.0, 3.0, 4.0]})
    with pytest.raises(ValueError, match="as many archs"):
        JointEvaluator({"autoformer": a, "pit": b})


# ---------------------------------------------------------------- an ensemble is a proxy like any other

@pytest.fixture
def shipped_ensembles(tmp_path, monkeypatch):
    """Two ensembles saved as results files, in a results folder of the test's own."""
    import json

    import vit_space.scoring.proxies as proxies
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "ens-two.json").write_text(json.dumps({"members": ["params", "mean_abs(msa_g)"]}))
    (folder / "ens-one.json").write_text(json.dumps({"members": ["mean_abs(msa_g)"]}))
    monkeypatch.setattr(proxies, "RESULTS_DIR", folder)


def tiny_setup(session_cache):
    from vit_space.setup_run import make_setup
    return make_setup(archs=12, img_size=32, batch_size=2, datasets="c100", cache=str(session_cache.root),
                      quiet=True, backend="sequential", device="cpu")


def test_an_ensemble_by_name_in_rank_and_within_bench(shipped_ensembles, session_cache):
    from vit_space.scoring.proxies import resolve_proxies, resolve_proxy
    from vit_space.scoring.ranking import proxy_scores, rank
    from vit_space.search.report import within_bench
    setup = tiny_setup(session_cache)
    two, one = resolve_proxy("ens-two"), resolve_proxy("ens-one")
    assert two.is_ensemble and two.members == ("params", "mean_abs(msa_g)")
    assert {"ens-two", "ens-one"} <= {p.name for p in resolve_proxies("all")}
    indices = setup.bench.split("all", 0)
    scores = proxy_scores(setup, [two, one, resolve_proxy("params"), resolve_proxy("mean_abs(msa_g)")], indices)
    expected = rank_average([scores["params"], scores["mean_abs(msa_g)"]])
    assert np.array_equal(scores["ens-two"]["c100_kd_acc"], expected["c100_kd_acc"])
    report = rank(setup, [one, resolve_proxy("mean_abs(msa_g)")], "all")["proxies"]
    for column, corr in report["mean_abs(msa_g)"]["datasets"].items():  # one member: its ranking
        assert {k: report["ens-one"]["datasets"][column][k] for k in ("kendall", "spearman")} == \
            {k: corr[k] for k in ("kendall", "spearman")}
    picked = within_bench(setup, two, split="all")["datasets"]["c100"]
    assert picked["top1_index"] == indices[int(np.argmax(expected["c100_kd_acc"]))] or picked["tied_at_top"] > 1


def test_an_ensemble_scores_search_candidates_by_their_ranks_among_the_bench(shipped_ensembles, session_cache):
    import random

    from vit_space.scoring.proxies import resolve_proxy
    from vit_space.search.candidates import ArchScorer, EnsembleScorer, proxy_needs
    from vit_space.search.constraints import Constraints, sample_fitting
    setup = tiny_setup(session_cache)
    scorer = ArchScorer.from_setup(resolve_proxy("ens-two"), setup)
    assert isinstance(scorer, EnsembleScorer) and scorer.needs == "data" == proxy_needs(scorer.proxy)
    bench_archs = setup.bench.archs(list(range(len(setup.bench))))
    values = scorer.many(bench_archs)  # on the bench's own archs: the rank-average's order
    member = [ArchScorer.from_setup(resolve_proxy(m), setup) for m in ("params", "mean_abs(msa_g)")]
    expected = rank_average([{"c": m.many(bench_archs)} for m in member])["c"]
    assert np.array_equal(np.argsort(values, kind="stable"), np.argsort(expected, kind="stable"))
    new = sample_fitting("autoformer", random.Random(5), Constraints(max_params=6e6), 2)
    assert all(0.5 <= v <= len(bench_archs) + 0.5 for v in scorer.many(new))
    assert scorer(new[0]) == scorer.many(new)[0]


# ---------------------------------------------------------------- the rules in an evolution

TINY = dict(pop=4, iters=3, hof=4, folds=2)


def test_split_all_leaves_no_test_part_and_says_so(session_cache, tmp_path):
    from gp.report import format_result
    from gp.run import evolve
    from gp.search import SearchConfig
    setup = tiny_setup(session_cache)
    result = evolve(setup, SearchConfig(seed=0, **TINY), tmp_path, search_part="all")
    assert result["test"] is None and result["beside"]["test"] is None
    assert result["search_part"] == "every record (no test part)"
    assert result["config"]["search_part"] == "all"
    text = format_result(result, tmp_path)
    assert "test   none: --split all searched on every record (no test part)" in text
    with pytest.raises(ValueError, match="search_part"):
        evolve(setup, SearchConfig(seed=0, **TINY), tmp_path / "x", search_part="half")


def test_the_ensemble_rule_answers_with_the_hall_of_fames_best(session_cache, tmp_path):
    from gp.run import evolve
    from gp.search import SearchConfig
    from vit_space.scoring.proxies import BASELINE_TREES
    setup = tiny_setup(session_cache)
    result = evolve(setup, SearchConfig(seed=0, choose="ensemble", ensemble=3, with_params=True, **TINY), tmp_path)
    hof = [row["formula"] for row in result["hall_of_fame"]]
    assert result["formula"] is None and result["members"] == hof[:3] + [BASELINE_TREES["params"]]
    assert result["beside"]["rule"] == "best" and result["beside"]["formula"] == hof[0]
    one = evolve(setup, SearchConfig(seed=0, choose="ensemble", ensemble=1, **TINY), tmp_path / "one")
    assert one["members"] == [one["beside"]["formula"]]  # one member: the best tree's own ranking
    assert one["test"]["jcm"] == pytest.approx(one["beside"]["test"]["jcm"], abs=1e-12)


def test_one_tree_for_two_spaces(session_cache, tmp_path):
    from gp.run import evolve, split_evaluator
    from gp.search import SearchConfig
    from vit_space.setup_run import make_setup
    setups = [make_setup(space=space, archs=12, img_size=32, batch_size=2, datasets="c100",
                         cache=str(session_cache.root), quiet=True, backend="sequential", device="cpu")
              for space in ("autoformer", "pit")]
    result = evolve(setups, SearchConfig(seed=0, **TINY), tmp_path)
    assert result["space"] == "autoformer,pit"
    tree = result["formula"]
    from vit_space.scoring.proxies import resolve_proxy
    for part in ("search", "test"):
        single = {s.bench.space: split_evaluator(s, part).evaluate(resolve_proxy(tree).tree).jcm for s in setups}
        assert result[part]["per_space"] == pytest.approx(single, abs=1e-12)
        assert result[part]["jcm"] == pytest.approx(sum(single.values()) / 2, abs=1e-12)
    # each space's own 95% interval: what its bootstrap gives on that space alone
    from vit_space.scoring.ceiling import bootstrap_jcm
    for s in setups:
        one = split_evaluator(s, "test")
        alone = bootstrap_jcm(one.evaluate(resolve_proxy(tree).tree).scores, one.accuracies)
        assert result["test"]["per_space_interval"][s.bench.space] == pytest.approx(list(alone), abs=1e-12)


def test_every_run_reports_every_rule_as_a_run_of_that_rule_would(session_cache, tmp_path):
    """best.json "rules": the discovery benchmark reads the ensemble rules off the paper run."""
    from gp.run import evolve
    from gp.search import SearchConfig
    setup = tiny_setup(session_cache)
    plain = evolve(setup, SearchConfig(seed=2, ensemble=3, **TINY), tmp_path / "best")
    assert set(plain["rules"]) == {"best", "cv", "ensemble", "ensemble+params"}
    assert plain["rules"]["best"]["formula"] == plain["formula"]
    assert plain["rules"]["best"]["test_jcm"] == plain["test"]["jcm"]
    for rule, with_params in (("ensemble", False), ("ensemble+params", True)):
        run = evolve(setup, SearchConfig(seed=2, ensemble=3, choose="ensemble", with_params=with_params, **TINY),
                     tmp_path / rule)
        assert plain["rules"][rule]["members"] == run["members"]
        assert plain["rules"][rule]["test_jcm"] == run["test"]["jcm"]
        assert run["rules"][rule] == plain["rules"][rule]
