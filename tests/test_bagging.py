"""--choose bagged: searches on bootstrap resamples of the search archs, answered by the
rank-average of their answers; no bag, and no answer, depends on a test arch."""
import copy
import dataclasses

import numpy as np
import pytest
from scipy.stats import kendalltau

from gp.bagging import ResampledEvaluator, bootstrap_positions, out_of_bag
from vit_space.scoring.evaluator import JCMSettings, result_from_scores

TINY = dict(pop=4, iters=3, hof=4, folds=2)


class ColumnsEvaluator:
    """Scores a 'tree' (a dict of per-column scores) as given, on archs 100, 101, ..."""

    def __init__(self, accuracies):
        self.accuracies, self.settings = accuracies, JCMSettings()
        self.indices = [100 + i for i in range(len(next(iter(accuracies.values()))))]

    def scores(self, tree):
        return tree

    def evaluate_scores(self, scores):
        return result_from_scores(scores, self.accuracies, self.settings)


def test_bootstrap_positions_are_seeded_draws_with_repeats_and_their_complement():
    a, b = bootstrap_positions(60, 0, 7), bootstrap_positions(60, 0, 7)
    assert np.array_equal(a, b) and len(a) == 60 and a.min() >= 0 and a.max() < 60
    assert len(np.unique(a)) < 60  # with replacement: some archs drawn twice
    assert not np.array_equal(a, bootstrap_positions(60, 1, 7))
    assert not np.array_equal(a, bootstrap_positions(60, 0, 8))
    oob = out_of_bag(60, a)
    assert set(oob).isdisjoint(a) and set(oob) | set(a) == set(range(60))


def test_a_resampled_jcm_is_kendalls_tau_b_over_the_drawn_archs():
    rng = np.random.default_rng(3)
    acc = {"x": list(rng.normal(size=20)), "y": list(rng.normal(size=20))}
    inner = ColumnsEvaluator(acc)
    tree = {c: rng.normal(size=20) for c in acc}
    positions = bootstrap_positions(20, 0, 1)
    bag = ResampledEvaluator(inner, positions)
    assert bag.indices == [inner.indices[p] for p in positions]
    result = bag.evaluate_scores(bag.scores(tree))
    for c in acc:  # scipy's tau-b on the expanded arrays: a pair of one arch drawn twice is out
        expected = kendalltau(tree[c][positions], np.asarray(acc[c])[positions]).statistic
        assert result.datasets[c]["kendall"] == pytest.approx(expected, abs=1e-12)
    shuffled = ResampledEvaluator(inner, np.random.default_rng(0).permutation(20))  # no repeats
    assert shuffled.evaluate_scores(shuffled.scores(tree)).jcm == \
        pytest.approx(inner.evaluate_scores(tree).jcm, abs=1e-12)


def tiny_setup(session_cache):
    from vit_space.setup_run import make_setup
    return make_setup(archs=12, img_size=32, batch_size=2, datasets="c100", cache=str(session_cache.root),
                      quiet=True, backend="sequential", device="cpu")


def with_other_test_accuracies(setup):
    """The setup with the test part's accuracies negated (their order reversed; search part unchanged)."""
    bench = copy.deepcopy(setup.bench)
    for i in bench.split("test", setup.split_seed):
        bench.records[i]["c100_kd_acc"] = -bench.records[i]["c100_kd_acc"]
    return dataclasses.replace(setup, bench=bench)


def test_the_bagged_answer_ranks_by_its_bags_answers_and_never_reads_a_test_arch(session_cache, tmp_path):
    from gp.run import evolve
    from gp.search import SearchConfig
    setup = tiny_setup(session_cache)
    config = SearchConfig(seed=0, choose="bagged", bags=3, **TINY)
    result = evolve(setup, config, tmp_path / "a")
    assert result["choice"] == "bagged" and result["formula"] is None
    assert result["members"] == [row["formula"] for row in result["bags"]]
    assert [row["bag"] for row in result["bags"]] == [0, 1, 2]
    assert result["evaluations"] == sum(row["evaluations"] for row in result["bags"])
    assert all((tmp_path / "a" / "bags" / f"bag{b}" / "checkpoint.json").is_file() for b in range(3))
    assert result["beside"]["rule"] == "best"
    other = evolve(with_other_test_accuracies(setup), config, tmp_path / "b")
    assert other["bags"] == [{**row, "seconds": o["seconds"]} for row, o in zip(result["bags"], other["bags"])]
    assert other["members"] == result["members"] and other["search"]["jcm"] == result["search"]["jcm"]
    # the test part is read, at the end only
    assert other["test"]["jcm"] == pytest.approx(-result["test"]["jcm"], abs=1e-12) != 0
    one = evolve(setup, dataclasses.replace(config, bags=1), tmp_path / "one")
    assert one["members"] == [one["beside"]["formula"]]  # one bag: its answer's own ranking
    assert one["test"]["jcm"] == pytest.approx(one["beside"]["test"]["jcm"], abs=1e-12)


def test_a_bagged_run_cut_short_resumes_to_the_same_answer(session_cache, tmp_path):
    from gp.run import evolve
    from gp.search import SearchConfig
    setup = tiny_setup(session_cache)
    config = SearchConfig(seed=1, choose="bagged", bags=2, checkpoint_every=1, **TINY)
    whole = evolve(setup, config, tmp_path / "whole")
    cut = evolve(setup, config, tmp_path / "cut", stop_after=2)
    assert cut == {"finished": False, "iteration": 2, "bag": 0}
    assert evolve(setup, config, tmp_path / "cut", resume=True, stop_after=2)["bag"] == 1
    resumed = evolve(setup, config, tmp_path / "cut", resume=True)
    assert resumed["members"] == whole["members"] and resumed["test"] == whole["test"]


def test_bagging_is_one_space_at_a_time(session_cache, tmp_path):
    from gp.run import evolve
    from gp.search import SearchConfig
    from vit_space.core.errors import BadInput
    from vit_space.setup_run import make_setup
    setups = [make_setup(space=space, archs=12, img_size=32, batch_size=2, datasets="c100",
                         cache=str(session_cache.root), quiet=True, backend="sequential", device="cpu")
              for space in ("autoformer", "pit")]
    with pytest.raises(BadInput, match="--choose bagged: one space at a time"):
        evolve(setups, SearchConfig(seed=0, choose="bagged", bags=2, **TINY), tmp_path)
