"""Ensembles of proxies: the rank-average of their scores, a final answer that averages noise out.

A search's best few proxies differ on 60 archs by less than Kendall's sampling error, so picking
the maximum picks partly noise. An ensemble scores an arch by the mean, over its members, of the
arch's rank under that member (per data set, average ranks for ties): a one-member ensemble ranks
the archs exactly as its member does. An arch on which any member is invalid is invalid.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from vit_space.scoring.jcm import average_ranks


def rank_average(member_scores: Sequence[Mapping[str, Sequence[float]]]) -> dict:
    """{column: per-arch mean rank over the members} from each member's {column: scores}; NaN
    where a member's score is not finite."""
    if not member_scores:
        raise ValueError("an ensemble needs at least one member")
    columns = list(member_scores[0])
    out = {}
    for column in columns:
        stacked = np.stack([np.asarray(m[column], dtype=np.float64) for m in member_scores])
        valid = np.all(np.isfinite(stacked), axis=0)
        ranks = np.full(stacked.shape, np.nan)
        for row, values in enumerate(stacked):  # ranks among the archs every member scores
            ranks[row, valid] = average_ranks(values[valid])
        out[column] = ranks.mean(axis=0)
    return out


def reference_ranks(scores: Sequence[float], reference: Sequence[float]) -> np.ndarray:
    """Each score's rank among REFERENCE scores (the count below, half the ties, one half): a rank
    for one arch at a time, as a search that scores candidates one by one needs. On the reference
    archs themselves it is their average rank (jcm.average_ranks), so an ensemble of these ranks
    orders the reference archs exactly as rank_average does."""
    ref = np.sort(np.asarray(reference, dtype=np.float64)[np.isfinite(reference)])
    values = np.asarray(scores, dtype=np.float64)
    below = np.searchsorted(ref, values, side="left")
    ties = np.searchsorted(ref, values, side="right") - below
    out = below + 0.5 * ties + 0.5
    out[~np.isfinite(values)] = np.nan
    return out
