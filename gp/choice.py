"""The final choice among the search's best distinct proxies, on the search split alone.

The search ranks by JCM on its 60 archs, where differences of ~0.005 are far inside Kendall's
sampling error: the top of a long search is partly noise that fits those archs. The hall of fame
holds the best distinct phenotypes evaluated (from the memo); each is scored by k-fold JCM inside
the search split (JCM on each fold's archs alone) and the pick maximises mean - 1 standard error,
preferring proxies that rank every part of the split well. The test split is never read here:
only the search evaluator's scores and accuracies are.
"""
from __future__ import annotations

import random
import statistics

import numpy as np

from gp.creator_setup import as_individual
from primitives import parse_formula
from vit_space.scoring.ensemble import rank_average
from vit_space.scoring.evaluator import result_from_scores
from vit_space.scoring.jcm import tied_pair_share
from vit_space.scoring.proxies import BASELINE_TREES


def hall_of_fame(memo: dict, phenotypes: dict, pset, size: int, first=None) -> list:
    """The `size` best valid evaluated formulas with distinct phenotypes, as individuals with
    fitness; ordered by JCM, then smaller tree, then formula (gp.search.best_individual's rule).
    `first` (Algorithm 1's answer) leads and stands for its phenotype."""
    valid = [(value, formula) for formula, (value, reason) in memo.items() if reason is None]
    valid.sort(key=lambda vf: -vf[0])
    out, seen = ([first], {phenotypes.get(str(first), str(first))}) if first is not None else ([], set())
    i = 0
    while i < len(valid) and len(out) < size:
        # formulas of one JCM value are ordered by size then text, as best_individual does
        j = i
        while j < len(valid) and valid[j][0] == valid[i][0]:
            j += 1
        group = []
        for value, formula in valid[i:j]:
            ind = as_individual(parse_formula(formula, pset))
            ind.fitness.values = (value,)
            group.append(ind)
        for ind in sorted(group, key=lambda t: (-len(t), str(t)), reverse=True):
            ph = phenotypes.get(str(ind), str(ind))
            if ph not in seen and len(out) < size:
                seen.add(ph)
                out.append(ind)
        i = j
    return out


def fold_positions(n: int, folds: int, seed: int) -> list:
    """k disjoint folds of positions 0..n-1 (seeded shuffle, sizes differing by at most one)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [sorted(order[f::folds]) for f in range(folds)]


def cross_validate(search_eval, trees: list, folds: int = 5, seed: int = 0) -> list:
    """Per tree: JCM on the whole search split, per fold, their mean, standard deviation and
    standard error, the score mean - s.e., and the tied-pair share. Uses only `search_eval`."""
    n = len(search_eval.indices)
    # Kendall needs >= 3 archs a fold; a split too small for two folds is one fold (s.e. 0), so
    # the choice falls back to the whole split's JCM
    parts = fold_positions(n, max(1, min(folds, n // 3)), seed)
    rows = []
    for tree in trees:
        scores = search_eval.scores(tree)
        whole = search_eval.evaluate_scores(scores)
        fold_jcm = []
        for part in parts:
            sub_scores = {c: np.asarray(v)[part] for c, v in scores.items()}
            sub_acc = {c: [search_eval.accuracies[c][i] for i in part] for c in scores}
            fold_jcm.append(result_from_scores(sub_scores, sub_acc, search_eval.settings).jcm)
        mean = statistics.fmean(fold_jcm)
        std = statistics.stdev(fold_jcm) if len(fold_jcm) > 1 else 0.0
        se = std / len(fold_jcm) ** 0.5
        ties = [tied_pair_share(v) for v in scores.values()]
        rows.append({"formula": str(tree), "size": len(tree), "jcm": whole.jcm,
                     "fold_jcm": fold_jcm, "fold_mean": mean, "fold_std": std, "fold_se": se,
                     "cv_score": mean - se, "tied_share": sum(ties) / len(ties)})
    return rows


def cv_choice(rows: list) -> dict:
    """The row with the highest mean - s.e. (ties: the earlier, i.e. higher-JCM, candidate)."""
    return max(rows, key=lambda r: r["cv_score"])


def ensemble_members(candidates: list, size: int, with_params: bool = False) -> list:
    """The formulas of the `size` best distinct phenotypes of the hall of fame (in its order), and
    #params of the blocks (its tree form) as one more member when asked and not already there."""
    members = [str(tree) for tree in candidates[:size]]
    if with_params and BASELINE_TREES["params"] not in members:
        members.append(BASELINE_TREES["params"])
    return members


def ensemble_result(evaluator, members: list, pset):
    """The ensemble's ProxyResult on EVALUATOR's archs: its members' rank-average, scored."""
    scores = rank_average([evaluator.scores(parse_formula(m, pset)) for m in members])
    return evaluator.evaluate_scores(scores)
