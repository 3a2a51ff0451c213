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
from scipy import stats

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
        out = {"kendall": stats.kendalltau(s, a).statistic,
               "spearman": stats.spearmanr(s, a).statistic}
        out["pearson"] = stats.pearsonr(s, a).statistic if np.std(s) * len(s) > 0 else float("nan")
    out = {k: float(v) for k, v in out.items()}
    if not all(math.isfinite(v) for v in out.values()):
        return None
    return out


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
