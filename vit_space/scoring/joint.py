"""One proxy for several search spaces: fitness on every space's archs at once.

The authors' released configs use one proxy for both spaces; every primitive and terminal exists
in both. A joint evaluator stands in for a ProxyEvaluator (scores, evaluate_scores, evaluate,
accuracies, indices), its columns named "space/column", and its JCM is the mean of the spaces'
JCMs (each space weighted alike, whatever its number of data sets).
"""
from __future__ import annotations

from typing import Mapping

from vit_space.scoring.evaluator import ProxyResult, result_from_scores
from vit_space.scoring.jcm import WORST


def joint_column(space: str, column: str) -> str:
    return f"{space}/{column}"


class JointEvaluator:
    """{space: ProxyEvaluator} evaluated as one; every space's evaluator must score the same number
    of archs (the k folds of the cross-validated choice are taken by position in each space)."""

    def __init__(self, evaluators: Mapping[str, object]):
        self.evaluators = dict(evaluators)
        sizes = {len(e.indices) for e in self.evaluators.values()}
        if len(sizes) != 1:
            raise ValueError(f"joint evaluation needs as many archs in every space (got {sorted(sizes)})")
        first = next(iter(self.evaluators.values()))
        self.indices, self.settings = first.indices, first.settings
        self.accuracies = {joint_column(space, c): acc for space, e in self.evaluators.items()
                           for c, acc in e.accuracies.items()}

    def scores(self, tree) -> dict:
        return {joint_column(space, c): v for space, e in self.evaluators.items()
                for c, v in e.scores(tree).items()}

    def per_space(self, scores: dict) -> dict:
        """{space: {column: scores}} back from the joint columns."""
        out: dict = {}
        for key, values in scores.items():
            space, column = key.split("/", 1)
            out.setdefault(space, {})[column] = values
        return out

    def space_jcms(self, scores: dict) -> dict:
        """{space: its own JCM} of joint scores."""
        return {space: self.evaluators[space].evaluate_scores(part).jcm
                for space, part in self.per_space(scores).items()}

    def evaluate_scores(self, scores: dict) -> ProxyResult:
        """Correlations per joint column; JCM = the mean of the spaces' own JCMs (WORST if any
        space's is: a proxy invalid on one space is invalid)."""
        merged = result_from_scores(scores, self.accuracies, self.settings)
        values = list(self.space_jcms(scores).values())
        merged.jcm = WORST if WORST in values else sum(values) / len(values)
        return merged

    def evaluate(self, tree) -> ProxyResult:
        return self.evaluate_scores(self.scores(tree))

