"""How good can a one-score-per-arch proxy be on these archs, and how sure is a JCM?

The ceiling. JCM averages Kendall's tau-b against several accuracy columns that disagree with
each other, so no proxy giving one score per arch reaches 1: the best it can do is the consensus
ranking that maximises the mean tau-b against the columns themselves (jcm.correlations + jcm.jcm:
per column over the archs whose accuracy is known, equal weights). `jcm_ceiling` reports two:
  * `strict`, over rankings without ties. The objective is then linear in the pairwise order
    (tau-b's denominator is fixed), a weighted linear ordering problem: exact by dynamic
    programming over subsets up to EXACT_MAX archs, else local search from the Borda order
    (mean of per-column ranks): single archs moved to their best place (adjacent swaps
    included) in repeated passes until none improves; then again from the tied optimum below
    with its ties broken by Borda's order and by each column, the best end kept;
  * `value`, the ceiling proper, over every score vector, ties allowed: tau-b leaves tied pairs
    out of its numerator and shrinks its denominator, so tying archs the columns disagree on
    scores higher than any strict order (one column with tied accuracies: the column itself
    scores 1, every strict order less; on the benches' splits the best ranking has only ~5-30
    tie groups and beats the best strict one by ~0.01-0.025). Exact by trying every ranking up
    to ENUMERATE_MAX archs; beyond, the best of: the same local search (moves may also join an
    arch or a whole tie group to another group) from the strict result, the Borda order and each
    accuracy column, alternated with the exact best cut of the current order into tie groups
    until no round improves.
`value` is the JCM of the returned `scores`, so a proxy scoring exactly these gets exactly it.
Guarantees: value >= strict; value >= the JCM of Borda's order and of each accuracy column used
as the proxy (its unknown entries ranked last), as the search starts from those; strict
is the optimum over strict orders up to EXACT_MAX archs and value the optimum over all score
vectors up to ENUMERATE_MAX; beyond those, search results, lower bounds on the true optima.
On the search and test parts of split seeds 0-9 of both benches, 25 randomised restarts each
found no higher value; strict was within 0.001 of the exact strict optimum (found offline by an
integer program), and value above that optimum by 0.009 or more.
The bound holds for proxies that rank the archs alike for every column; a proxy's scores may
differ by data set (its head size, its own images), which could in principle pass it slightly.

The interval. `bootstrap_jcm` resamples archs with replacement (the same resample in every
column) and takes the percentile interval of the resamples' JCMs. A resample repeats archs; a
repeated arch ties with itself in scores and accuracies, which tau-b handles, so each resample's
tau-b is computed exactly from per-arch multiplicities w, as w' M w for n x n pair matrices M:
all resamples in a few matrix products.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Optional

import numpy as np

from vit_space.scoring.jcm import WORST, average_ranks, correlations, jcm

EXACT_MAX = 12  # strict optimum by subset DP up to this many archs (2^12 states, ~0.05 s)
ENUMERATE_MAX = 7  # tied optimum by trying every ranking up to this many archs (47293, ~0.3 s)
LEVEL = 0.95
TOL = 1e-12


class Ceiling(NamedTuple):
    value: float  # the best mean Kendall tau-b found, ties allowed (= the JCM of `scores`)
    scores: np.ndarray  # consensus scores, one per arch (higher = better; ties allowed)
    strict: float  # the best found among rankings without ties (exact up to EXACT_MAX archs)


# ---------------------------------------------------------------------------------- ceiling

def _acc_array(values) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


def _pair_matrices(accuracies: Mapping[str, list]):
    """(S, K): per column, sign(a_i - a_j) and 1 for each ordered pair of archs both known there."""
    acc = np.stack([_acc_array(v) for v in accuracies.values()])
    known = ~np.isnan(acc)
    filled = np.where(known, acc, 0.0)
    both = known[:, :, None] & known[:, None, :]
    S = np.sign(filled[:, :, None] - filled[:, None, :]) * both
    K = both & ~np.eye(acc.shape[1], dtype=bool)[None]
    return S, K.astype(np.float64), known


def borda_scores(accuracies: Mapping[str, list]) -> np.ndarray:
    """Mean over columns of each arch's rank scaled to [0, 1] (ties: mean rank); an arch missing
    in a column is ranked on the others (0.5 where it is missing everywhere)."""
    acc = np.stack([_acc_array(v) for v in accuracies.values()])
    ranks = np.full(acc.shape, np.nan)
    for c, row in enumerate(acc):
        known = ~np.isnan(row)
        if known.sum() > 1:
            ranks[c, known] = (average_ranks(row[known]) - 1) / (known.sum() - 1)
    counted = ~np.isnan(ranks)
    total = np.where(counted, ranks, 0.0).sum(0)
    return np.where(counted.any(0), total / np.maximum(counted.sum(0), 1), 0.5)


def _levels(scores) -> np.ndarray:
    """Scores as even tie-group levels 0, 2, 4, ... (odd levels are the gaps between groups)."""
    return 2 * np.unique(np.asarray(scores), return_inverse=True)[1].astype(np.int64)


def _strict_levels(scores) -> np.ndarray:
    """The order of `scores`, ties broken by arch index: distinct levels 0, 2, 4, ..."""
    order = np.argsort(np.asarray(scores), kind="stable")
    levels = np.empty(len(order), dtype=np.int64)
    levels[order] = 2 * np.arange(len(order))
    return levels


class _Objective:
    """Mean tau-b of level vectors against the columns, with cheap single-arch move values."""

    def __init__(self, S, K):
        self.S, self.K = S, K
        self.da = np.abs(S).sum((1, 2))  # untied ordered pairs of the accuracies, per column

    def parts(self, x):
        sx = np.sign(x[:, None] - x[None, :]).astype(np.float64)
        return (sx * self.S).sum((1, 2)), (np.abs(sx) * self.K).sum((1, 2))

    def value(self, num, ux):
        with np.errstate(divide="ignore", invalid="ignore"):
            tau = num / np.sqrt(ux * self.da)
        tau = np.where(ux > 0, tau, -np.inf)  # a proxy constant on a column's archs is invalid
        return tau.mean(-1)

    def moves(self, x, unit, num, ux, strict):
        """Values of placing the archs `unit` (one arch, or a whole tie group) at each target
        level t (even: join that group; odd: a new group in that gap), as (targets, values)."""
        top = x.max() + 1
        targets = np.arange(-1, top + 1, 2) if strict else np.arange(-1, top + 1)
        old = np.sign(x[unit[0]] - x).astype(np.float64)
        new = np.sign(targets[:, None] - x[None, :]).astype(np.float64)
        Su, Ku = self.S[:, unit[0], :], self.K[:, unit[0], :]
        if len(unit) > 1:  # pairs inside the group move with it: they change nothing
            Su, Ku = self.S[:, unit, :].sum(1), self.K[:, unit, :].sum(1)
            Su[:, unit], Ku[:, unit] = 0.0, 0.0
        num_t = num - 2 * (Su @ old) + 2 * (new @ Su.T)
        ux_t = ux - 2 * (Ku @ np.abs(old)) + 2 * (np.abs(new) @ Ku.T)
        return targets, self.value(num_t, ux_t)


def _units(x, strict: bool) -> list:
    """What one move relocates: each arch alone, then (with ties) each tie group as a whole,
    which merges groups or moves one in a step no single-arch move improves."""
    units = [np.array([i]) for i in range(len(x))]
    if not strict:
        units += [np.flatnonzero(x == level) for level in np.unique(x)
                  if (x == level).sum() > 1]
    return units


def _local_search(obj: _Objective, x, strict: bool) -> np.ndarray:
    """Move one arch (or tie group) at a time to its best place while that improves; passes in
    index order until one changes nothing (deterministic; each move strictly improves)."""
    x = x.copy()
    num, ux = obj.parts(x)
    current = obj.value(num, ux)
    improved = True
    while improved:
        improved = False
        for unit in _units(x, strict):
            if len(unit) > 1 and len(np.unique(x[unit])) > 1:
                continue  # a group broken up earlier in this pass
            targets, values = obj.moves(x, unit, num, ux, strict)
            best = int(np.argmax(values))
            if values[best] > current + TOL:
                x[unit] = targets[best]
                x = _levels(x)
                num, ux = obj.parts(x)
                current = obj.value(num, ux)
                improved = True
    return x


def _exact_strict(S, K) -> np.ndarray:
    """The strict order of highest mean tau-b, by dynamic programming over subsets: with no ties
    the objective is a sum of pair weights W[i, j] over the pairs ranked i above j."""
    n = S.shape[1]
    da, ka = np.abs(S).sum((1, 2)), K.sum((1, 2))
    W = (2 * S / np.sqrt(ka * da)[:, None, None]).mean(0)
    size = 1 << n
    inc = np.zeros((size, n))  # inc[m, i]: weight of every member of m above i
    for m in range(1, size):
        low = (m & -m).bit_length() - 1
        inc[m] = inc[m & (m - 1)] + W[low]
    best = np.full(size, -np.inf)
    best[0] = 0.0
    last = np.zeros(size, dtype=np.int64)
    bits = np.arange(n)
    for m in range(1, size):
        members = bits[(m >> bits) & 1 == 1]
        rest = m ^ (1 << members)
        values = best[rest] + inc[rest, members]
        k = int(np.argmax(values))
        best[m], last[m] = values[k], members[k]
    levels, m = np.empty(n, dtype=np.int64), size - 1
    for place in range(n):  # the arch placed last is the lowest of its set
        i = last[m]
        levels[i] = 2 * place
        m ^= 1 << i
    return levels


def _pair_weights(S) -> np.ndarray:
    """W[i, j]: what ranking i above j adds to the summed tau-b numerators, each column scaled by
    its accuracies' untied pairs (tau-b's denominator but for the proxy's own untied pairs)."""
    return (S / np.sqrt(np.abs(S).sum((1, 2)))[:, None, None]).mean(0)


def _best_cut(W, order) -> np.ndarray:
    """The best split of `order` (best arch first) into consecutive tie groups, exact by dynamic
    programming over (end of the last group, tied pairs so far) for mean tau-b = sum of W over
    untied pairs / sqrt(untied pairs), i.e. when every column knows every arch."""
    n = len(order)
    a = np.triu(W[np.ix_(order, order)], 1)
    prefix = np.zeros((n + 1, n + 1))
    prefix[1:, 1:] = a.cumsum(0).cumsum(1)
    pairs = n * (n - 1) // 2
    within = np.full((n + 1, pairs + 1), np.inf)  # least W inside groups, by tied pairs
    within[0, 0] = 0.0
    start = np.zeros((n + 1, pairs + 1), dtype=np.int64)
    for e in range(1, n + 1):
        for s in range(e):
            k = (e - s) * (e - s - 1) // 2
            candidate = within[s, :pairs + 1 - k] + (prefix[e, e] - prefix[s, e])
            better = candidate < within[e, k:]
            within[e, k:][better] = candidate[better]
            start[e, k:][better] = s
    tied = np.arange(pairs + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where((tied < pairs) & np.isfinite(within[n]),
                         (a.sum() - within[n]) / np.sqrt(pairs - tied), -np.inf)
    t, e, groups = int(np.argmax(value)), n, []
    while e > 0:
        s = start[e, t]
        groups.append(order[s:e])
        t, e = t - (e - s) * (e - s - 1) // 2, s
    levels = np.empty(n, dtype=np.int64)
    for g, members in enumerate(groups):  # collected worst group first
        levels[members] = 2 * g
    return levels


def _weak_orders(n: int) -> np.ndarray:
    """Every ranking of n archs with ties allowed (ordered set partitions: 4683 for 6 archs,
    47293 for 7), as level rows."""
    codes = np.arange(n ** n)
    digits = (codes[:, None] // (n ** np.arange(n))[None, :]) % n
    ordered = np.sort(digits, 1)
    groups = 1 + (np.diff(ordered, axis=1) > 0).sum(1)
    return digits[ordered[:, -1] + 1 == groups]


def _enumerated(obj: _Objective, n: int) -> np.ndarray:
    """The exact optimum over every ranking with ties, for a handful of archs."""
    rows = _weak_orders(n)
    sx = np.sign(rows[:, :, None] - rows[:, None, :]).astype(np.float64)
    num = np.einsum("mij,cij->mc", sx, obj.S)
    ux = np.einsum("mij,cij->mc", np.abs(sx), obj.K)
    return 2 * rows[int(np.argmax(obj.value(num, ux)))]


def _with_ties(obj: _Objective, strict, keys: list) -> np.ndarray:
    """Alternate the exact best cut of a strict order into tie groups (the current groups in
    order, members ordered by one of `keys`) with the local search over tied rankings, from the
    strict result and from each key itself, until no round improves."""
    W = _pair_weights(obj.S)
    ends = [_local_search(obj, x, False) for x in [strict] + [_levels(k) for k in keys]]
    values = [obj.value(*obj.parts(x)) for x in ends]
    x, current = ends[int(np.argmax(values))], max(values)
    while True:
        rounds = [_local_search(obj, _best_cut(W, np.lexsort((-np.asarray(k), -x))), False)
                  for k in [strict] + keys]
        values = [obj.value(*obj.parts(y)) for y in rounds]
        if max(values) <= current + TOL:
            return x
        x, current = rounds[int(np.argmax(values))], max(values)


def _refined_strict(obj: _Objective, strict, tied, keys: list) -> np.ndarray:
    """The best of `strict` and the strict local search from `tied` with its ties broken by each
    key: the tied optimum's order often leads the strict search past Borda's local optimum."""
    ends = [strict]
    for key in keys:
        order = np.lexsort((np.asarray(key), tied))
        start = np.empty(len(order), dtype=np.int64)
        start[order] = 2 * np.arange(len(order))
        ends.append(_local_search(obj, start, True))
    values = [obj.value(*obj.parts(x)) for x in ends]
    return ends[int(np.argmax(values))]


def _valid_columns(accuracies: Mapping[str, list]) -> bool:
    """A column with under 3 known accuracies, or all equal, makes every proxy's JCM WORST."""
    for values in accuracies.values():
        known = _acc_array(values)
        known = known[~np.isnan(known)]
        if len(known) < 3 or np.ptp(known) == 0:
            return False
    return True


def consensus_jcm(scores, accuracies: Mapping[str, list]) -> float:
    """JCM (Kendall, equal weights) of one score vector used for every column."""
    return jcm({c: correlations(scores, a) for c, a in accuracies.items()})


def jcm_ceiling(accuracies: Mapping[str, list], exact_max: int = EXACT_MAX,
                enumerate_max: int = ENUMERATE_MAX) -> Ceiling:
    """The best JCM of one score per arch on these archs, ties allowed, and the best strict
    order's (see the module text). `accuracies`: column -> per-arch accuracy or None (that arch
    is left out of that column). `exact_max` / `enumerate_max`: up to how many archs the strict /
    the tied optimum is exact rather than searched (0: always searched, for tests)."""
    if not accuracies or not _valid_columns(accuracies):
        return Ceiling(WORST, borda_scores(accuracies) if accuracies else np.zeros(0), WORST)
    borda = borda_scores(accuracies)
    S, K, known = _pair_matrices(accuracies)
    obj, n = _Objective(S, K), S.shape[1]
    strict = _exact_strict(S, K) if n <= exact_max else _local_search(obj, _strict_levels(borda), True)
    if n <= enumerate_max:
        best = _enumerated(obj, n)
    else:
        acc = np.stack([_acc_array(v) for v in accuracies.values()])
        columns = [np.where(ok, row, np.nanmin(row) - 1) for row, ok in zip(acc, known)]
        best = _with_ties(obj, strict, [borda] + columns)  # each column as a proxy is a start
        if n > exact_max:
            strict = _refined_strict(obj, strict, best, [borda] + columns)
    scores, strict_value = (best / 2).astype(np.float64), consensus_jcm(strict, accuracies)
    value = consensus_jcm(scores, accuracies)
    if strict_value > value:  # never, the searches only improve: kept so value >= strict holds
        scores, value = (strict / 2).astype(np.float64), strict_value
    return Ceiling(value, scores, strict_value)


def ceiling_share(value: float, ceiling: float) -> Optional[float]:
    """A proxy's JCM as a share of the ceiling (1 = as good as one score per arch can be);
    None where the ceiling is not positive (degenerate accuracies)."""
    if ceiling is None or value is None or not ceiling > 0:
        return None
    return float(value / ceiling)


# -------------------------------------------------------------------------------- bootstrap

def _resample_counts(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """Multiplicity of each arch in each resample (archs drawn with replacement, seeded)."""
    draws = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    counts = np.zeros((n_resamples, n))
    np.add.at(counts, (np.arange(n_resamples)[:, None], draws), 1)
    return counts


def _resampled_tau(scores, accuracy, counts) -> np.ndarray:
    """Kendall's tau-b of every resample at once from the per-arch multiplicities; NaN where a
    resample leaves under 3 known archs or a constant proxy or accuracy (invalid, as in jcm)."""
    s, a = np.asarray(scores, dtype=np.float64), _acc_array(accuracy)
    known = ~np.isnan(a)
    s, a, w = s[known], a[known], counts[:, known]
    sx = np.sign(s[:, None] - s[None, :])
    sa = np.sign(a[:, None] - a[None, :])

    def quad(M):
        return ((w @ M) * w).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = quad(sx * sa) / np.sqrt(quad(np.abs(sx)) * quad(np.abs(sa)))
    ok = (w.sum(1) >= 3) & np.isfinite(tau)
    return np.where(ok, np.clip(tau, -1.0, 1.0), np.nan)


def bootstrap_values(scores: Mapping[str, np.ndarray], accuracies: Mapping[str, list],
                     n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """JCM of each of `n_resamples` resamples of the archs drawn with replacement (one resample
    for all columns, numpy default_rng(seed): reproducible); WORST where the proxy is invalid on
    a resample, as JCM does, and everywhere if it is invalid on the archs themselves."""
    columns = list(scores)
    if not columns or any(correlations(scores[c], accuracies[c]) is None for c in columns):
        return np.full(n_resamples, WORST)
    counts = _resample_counts(len(np.asarray(scores[columns[0]])), n_resamples, seed)
    taus = np.stack([_resampled_tau(scores[c], accuracies[c], counts) for c in columns])
    return np.where(np.isnan(taus).any(0), WORST, np.nan_to_num(taus).mean(0))


def percentile_interval(values, level: float = LEVEL) -> tuple:
    """(low, high): the central `level` share of `values`."""
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(np.asarray(values), [tail, 100 - tail])
    return (float(low), float(high))


def bootstrap_jcm(scores: Mapping[str, np.ndarray], accuracies: Mapping[str, list],
                  n_resamples: int = 1000, seed: int = 0, level: float = LEVEL) -> tuple:
    """(low, high): the `level` percentile interval of JCM over archs resampled with replacement
    (see bootstrap_values); an invalid proxy gets (WORST, WORST)."""
    return percentile_interval(bootstrap_values(scores, accuracies, n_resamples, seed), level)


def ceiling_fields(ceiling: Ceiling) -> dict:
    """The ceiling of a split as reports show it (the tied one is the bound on every proxy)."""
    return {"ceiling": ceiling.value, "ceiling_strict": ceiling.strict}


def proxy_fields(scores: Mapping[str, np.ndarray], accuracies: Mapping[str, list], value: float,
                 ceiling: float, seed: int = 0) -> dict:
    """What reports show beside a proxy's JCM `value`: its 95% bootstrap interval and its share
    of the split's ceiling."""
    low, high = bootstrap_jcm(scores, accuracies, seed=seed)
    return {"jcm_interval": [low, high], "ceiling_share": ceiling_share(value, ceiling)}
