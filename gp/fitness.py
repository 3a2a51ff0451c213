"""Fitness of a proxy tree with a memo, and the degenerate proxies that never enter a population.

The memo maps a formula (the printed tree, which determines its value) to its JCM, so identical
trees, which steady-state GP produces often, are evaluated once. It is saved in checkpoints.
"""
from __future__ import annotations

import numpy as np

from vit_space.jcm import WORST

REJECT_REASONS = ("terminal", "invalid", "constant", "too_large", "duplicate")


class MemoFitness:
    """Callable: tree -> (jcm, reject_reason or None). `evaluator` has .scores(tree) and
    .evaluate_scores(scores) (see vit_space.evaluator.ProxyEvaluator)."""

    def __init__(self, evaluator, max_nodes: int = 60):
        self.evaluator, self.max_nodes = evaluator, max_nodes
        self.memo: dict = {}
        self.evaluations = 0

    def degenerate(self, tree, scores: dict):
        for values in scores.values():
            if not np.all(np.isfinite(values)):
                return "invalid"
            if np.ptp(values) == 0:
                return "constant"
        return None

    def __call__(self, tree):
        if len(tree) == 1:
            return WORST, "terminal"
        if len(tree) > self.max_nodes:
            return WORST, "too_large"
        key = str(tree)
        if key not in self.memo:
            self.evaluations += 1
            scores = self.evaluator.scores(tree)
            reason = self.degenerate(tree, scores)
            value = WORST if reason else self.evaluator.evaluate_scores(scores).jcm
            self.memo[key] = (float(value), reason)
        return self.memo[key]
