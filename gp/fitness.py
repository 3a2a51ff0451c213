"""Fitness of a proxy tree with a memo, and the degenerate proxies that never enter a population.

The memo maps a formula (the printed tree, which determines its value) to its JCM, so identical
trees, which steady-state GP produces often, are evaluated once. It is saved in checkpoints.

A tree's phenotype is what JCM sees of it: the rank vector of its scores over the search archs
per data set (ties included). Two formulas with one phenotype (e.g. width x depth counted two ways)
are one proxy to the search; `phenotypes` maps each valid formula to a digest of it.
"""
from __future__ import annotations

import hashlib
import threading

import numpy as np

from vit_space.scoring.jcm import WORST, average_ranks

REJECT_REASONS = ("terminal", "invalid", "constant", "too_large", "duplicate", "phenotype")


def phenotype_key(scores: dict) -> str:
    """Digest of the per-data-set rank vectors (average ranks, so ties count)."""
    h = hashlib.sha1()
    for column in sorted(scores):
        h.update(column.encode())
        h.update(average_ranks(np.asarray(scores[column], dtype=np.float64)).tobytes())
    return h.hexdigest()[:20]


class MemoFitness:
    """Callable: tree -> (jcm, reject_reason or None). `evaluator` has .scores(tree) and
    .evaluate_scores(scores) (see vit_space.scoring.evaluator.ProxyEvaluator)."""

    def __init__(self, evaluator, max_nodes: int = 60):
        self.evaluator, self.max_nodes = evaluator, max_nodes
        self.memo: dict = {}
        self.phenotypes: dict = {}  # formula -> phenotype digest, for valid formulas
        self.evaluations = 0  # evaluated by this process (len(memo) counts a resumed run's too)
        self._lock = threading.Lock()  # toolbox.map may call this from threads

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
            scores = self.evaluator.scores(tree)
            reason = self.degenerate(tree, scores)
            value = WORST if reason else self.evaluator.evaluate_scores(scores).jcm
            with self._lock:
                self.evaluations += 1
                if not reason:
                    self.phenotypes[key] = phenotype_key(scores)
                self.memo[key] = (float(value), reason)
        return self.memo[key]

    def phenotype(self, tree):
        """The phenotype digest of an evaluated valid tree (None otherwise)."""
        return self.phenotypes.get(str(tree))
