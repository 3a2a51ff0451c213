"""The bagged final answer (--choose bagged): B searches, each on a bootstrap resample of the
search archs, answered by the rank-average of their B answers.

One search's best JCM on 60 archs is partly a fit to those archs' noise; a search on another
draw of them fits other noise, and the rank-average keeps what the answers share. The other
answer one could take, the bag answer with the best mean JCM on the out-of-bag archs, picks a
maximum again, over about 22 archs a bag (a Kendall error near 0.1): the very noise bagging is
there to average out. So out-of-bag JCMs are reported beside each bag, never chosen by.

A bag reads the search part only: its resample is drawn from the search evaluator's positions
and its trees are scored through that evaluator (scores of the whole part, indexed by position),
so B bags cost B searches of the part's evaluation and no extra statistics.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from gp.search import SearchConfig, best_individual, new_search
from vit_space.core.errors import BadInput
from vit_space.scoring.evaluator import result_from_scores
from vit_space.scoring.joint import JointEvaluator


def bootstrap_positions(n: int, bag: int, seed: int) -> np.ndarray:
    """Bag `bag`'s resample: n positions in 0..n-1 drawn with replacement (seeded by the search
    seed and the bag), sorted."""
    return np.sort(np.random.default_rng([seed, bag]).integers(0, n, size=n))


def out_of_bag(n: int, positions: np.ndarray) -> np.ndarray:
    """The positions a resample did not draw."""
    return np.setdiff1d(np.arange(n), positions)


class ResampledEvaluator:
    """An evaluator on positions of another's archs (repeats allowed, as in a bootstrap draw):
    the other scores its own archs, this one picks them by position. Kendall's tau-b leaves out a
    pair of one arch drawn twice (tied in both score and accuracy)."""

    def __init__(self, inner, positions):
        self.inner, self.positions = inner, np.asarray(positions, dtype=int)
        self.indices = [inner.indices[p] for p in self.positions]
        self.settings = inner.settings
        self.accuracies = {c: [acc[p] for p in self.positions] for c, acc in inner.accuracies.items()}

    def scores(self, tree) -> dict:
        return {c: np.asarray(v)[self.positions] for c, v in self.inner.scores(tree).items()}

    def evaluate_scores(self, scores: dict):
        return result_from_scores(scores, self.accuracies, self.settings)

    def evaluate(self, tree):
        return self.evaluate_scores(self.scores(tree))


def bag_dir(out: Path, bag: int) -> Path:
    return Path(out) / "bags" / f"bag{bag}"


def bag_searches(search_eval, pset, config: SearchConfig, out: Path, identity: dict,
                 n_jobs: int = 1, toolbox_hook=None) -> list:
    """config.bags Searches, not yet run: bag b searches with seed config.seed + b and Algorithm
    1's answer on its resample, checkpointing under OUT/bags/bag<b>/."""
    if isinstance(search_eval, JointEvaluator):
        raise BadInput("--choose bagged: one space at a time (expected a single --space)")
    n = len(search_eval.indices)
    searches = []
    for bag in range(config.bags):
        evaluator = ResampledEvaluator(search_eval, bootstrap_positions(n, bag, config.seed))
        bag_config = replace(config, seed=config.seed + bag, choose="best")
        searches.append(new_search(evaluator, pset, bag_config, bag_dir(out, bag) / "checkpoint.json",
                                   {**identity, "bag": bag}, n_jobs, toolbox_hook))
    return searches


def run_bags(searches: list, resume: bool, progress: bool, stop_after=None):
    """Run the bags in turn (a resumed run continues each from its checkpoint, if it has one);
    None when every bag finished, else the bag that stopped short (`stop_after`, for tests)."""
    for bag, search in enumerate(searches):
        search.run(resume=resume and search.checkpoint_path.exists(), progress=progress,
                   stop_after=stop_after)
        if not search.finished:
            return bag
    return None


def bag_rows(searches: list, search_eval) -> list:
    """Per bag: its answer, its JCM on its resample and on its out-of-bag archs, its cost."""
    n = len(search_eval.indices)
    rows = []
    for bag, search in enumerate(searches):
        answer = best_individual(search.state.population)
        oob = out_of_bag(n, search.fitness.evaluator.positions)
        oob_jcm = ResampledEvaluator(search_eval, oob).evaluate(answer).jcm if len(oob) >= 3 else None
        rows.append({"bag": bag, "formula": str(answer), "bag_jcm": answer.fitness.values[0],
                     "out_of_bag_jcm": oob_jcm, "out_of_bag_archs": int(len(oob)),
                     "evaluations": len(search.memo), "seconds": round(search.seconds, 2)})
    return rows


def bagged_history(searches: list) -> list:
    """The histories of the bags run so far, one after another, each record marked with its bag."""
    return [{**record, "bag": bag} for bag, s in enumerate(searches) if s.state is not None
            for record in s.state.history]


def first_checkpoint(out: Path, config: SearchConfig) -> Path:
    """The checkpoint --resume of a run in OUT checks first: the search's, or a bagged run's first bag's."""
    return bag_dir(out, 0) / "checkpoint.json" if config.choose == "bagged" else Path(out) / "checkpoint.json"

