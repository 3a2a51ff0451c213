"""Rank correlations of proxy scores with true accuracies, and JCM, the joint correlation metric.

JCM (Auto-Prox, AAAI 2024) joins a proxy's ranking quality over several data sets so that a
proxy found on them generalises across domains. Here, by default:
    JCM = mean over the chosen data sets of Kendall's tau(scores, accuracies)
with options: `metric` kendall|spearman|pearson, per-data-set `weights` (normalised to sum 1),
and `absolute` (use |tau|, for proxies whose sign is arbitrary). A proxy that is invalid
(NaN/inf) on any arch or constant over the archs gets WORST = -1, the lowest possible value.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional

import numpy as np

METRICS = ("kendall", "spearman", "pearson")
WORST = -1.0


def correlations(scores, accuracies) -> Optional[dict]:
    """Kendall, Spearman and Pearson of scores vs accuracies over the archs whose accuracy is
    known; None when the scores are invalid or constant there."""
    scores = np.asarray(scores, dtype=np.float64)
    acc = np.asarray([np.nan if a is None else a for a in accuracies], dtype=np.float64)
    known = ~np.isnan(acc)
    s, a = scores[known], acc[known]
    if len(s) < 3 or not np.all(np.isfinite(s)) or np.ptp(s) == 0 or np.ptp(a) == 0:
        return None
    with np.errstate(all="ignore"):
        out = {"kendall": kendall_tau_b(s, a),
               "spearman": _pearson(average_ranks(s), average_ranks(a)),
               "pearson": _pearson(s, a) if np.std(s) * len(s) > 0 else float("nan")}
    out = {k: float(v) for k, v in out.items()}
    if not all(math.isfinite(v) for v in out.values()):
        return None
    return out


def kendall_tau_b(x, y) -> float:
    """Kendall's tau-b (scipy.stats.kendalltau's default) from the pairwise sign matrices: for the
    tens of archs of a split this is ~50x faster than scipy's, and the search computes it for
    every candidate and data set. Equal to scipy's to rounding (tests/test_evaluator.py)."""
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    tau = (dx * dy).sum() / np.sqrt(np.abs(dx).sum() * np.abs(dy).sum())
    return float(min(1.0, max(-1.0, tau)))


def average_ranks(x) -> np.ndarray:
    """1-based ranks, tied values sharing their mean rank: scipy.stats.rankdata's default, the
    same half-integers, at a tenth of its time (it ran for every candidate and data set, and
    importing scipy.stats alone took 0.8 s of a warm run's start). A NaN makes every rank NaN,
    as there."""
    x = np.asarray(x)
    if np.isnan(x).any():
        return np.full(len(x), np.nan)
    order = np.argsort(x, kind="mergesort")
    ordered = x[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]
    bounds = np.flatnonzero(np.r_[first, True])  # where each run of equal values starts, and n
    run = np.cumsum(first) - 1
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = 0.5 * (bounds[run] + 1 + bounds[run + 1])
    return ranks


def _pearson(x, y) -> float:
    """Pearson's r as scipy.stats.pearsonr computes it (centred, normalised, dot product)."""
    xm, ym = x - x.mean(), y - y.mean()
    return float(np.clip(np.dot(xm / np.linalg.norm(xm), ym / np.linalg.norm(ym)), -1.0, 1.0))


def jcm(per_dataset: Mapping[str, Optional[dict]], metric: str = "kendall",
        weights: Optional[Mapping[str, float]] = None, absolute: bool = False) -> float:
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r}: expected one of {METRICS}")
    if not per_dataset or any(c is None for c in per_dataset.values()):
        return WORST
    weights = weights or {name: 1.0 for name in per_dataset}
    norm = sum(weights[name] for name in per_dataset)
    value = sum(weights[name] * (abs(c[metric]) if absolute else c[metric])
                for name, c in per_dataset.items()) / norm
    return float(value)


def tied_pair_share(scores) -> float:
    """Share of arch pairs a proxy scores exactly alike: a search picking by such a proxy leaves
    those pairs to chance (a structural count ties every arch of one width x depth). 0 = no ties."""
    values = np.asarray(scores, dtype=np.float64)
    n = len(values)
    if n < 2:
        return 0.0
    _, counts = np.unique(values, return_counts=True)
    return float((counts * (counts - 1)).sum() / (n * (n - 1)))

