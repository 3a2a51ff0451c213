"""The discovery protocol's tables (docs/discovery.md, the README's summary) from its rows: mean
test JCM per method over split seeds, paired wins and Wilcoxon p-values, each rule against the one
beside it from the same run, and the test parts' ceilings."""
from __future__ import annotations

import statistics

from vit_space.data.bench import column_for, open_bench
from vit_space.scoring.ceiling import jcm_ceiling
from benchmarks.discovery_methods import BASELINES

# how the tables name each final rule, and the order and labels of their rows
RULE_WORDS = {"cv": "cross-validated choice", "best": "best search JCM",
              "ensemble": "ensemble of the hall of fame's best",
              "ensemble+params": "ensemble of the hall of fame's best and #params",
              "bagged": "ensemble of the bags' answers", "bagged+params": "ensemble of the bags' answers and #params"}
SEARCH_ORDER = ("paper", "ensemble", "ensemble_params", "random_paper", "bagged", "bagged_params", "joint",
                "large", "random")
LABELS = {"paper": "paper budget (a)", "large": "large (b)", "random": "random search (c)",
          "random_paper": "random search at the paper budget",
          "ensemble": "ensemble (paper run, K = 5)", "ensemble_params": "ensemble + #params (paper run)",
          "bagged": "bagged (5 bags, the paper run's evaluations)", "bagged_params": "bagged + #params",
          "joint": "joint (one tree, both spaces)", "baseline": "each split's best baseline",
          "ceiling": "ceiling of the test parts"}
# (b) against the control and Algorithm 1, Algorithm 1 against the control, and both (b) and the
# control against the baselines: if random search beats them too, the lead is not evolution's;
# each rule that averages against Algorithm 1, both random controls, (b) and the best baseline
PAIRS = (("large", "random"), ("large", "paper"), ("paper", "random"), ("paper", "random_paper"),
         ("large", "baseline"), ("random", "baseline"), ("paper", "baseline")) + tuple(
    (m, other) for m in ("ensemble", "ensemble_params", "bagged", "bagged_params", "joint")
    for other in ("paper", "random_paper", "random", "large", "baseline"))


def _mean_std(values: list) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {std:.3f}"


def _mean_or_dash(values: list) -> str:
    """The mean of the values known (a joint run's rows have no per-space tied share)."""
    known = [v for v in values if v is not None]
    return f"{statistics.fmean(known):.3f}" if known else "-"


def paired_record(a: dict, b: dict) -> tuple:
    """(wins of a, splits compared, Wilcoxon signed-rank p) over the splits both have."""
    from scipy.stats import wilcoxon
    common = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in common]
    wins = sum(d > 0 for d in diffs)
    p = None
    if len(common) >= 2 and any(d != 0 for d in diffs):
        p = float(wilcoxon(diffs).pvalue)
    return wins, len(common), p


def _p_text(p) -> str:
    return "n/a" if p is None else f"{p:.3f}"


def best_baselines(rows: list) -> dict:
    """split -> the row of the baseline with the highest search-part JCM on that split."""
    best = {}
    for split in {r["split_seed"] for r in rows}:
        candidates = [r for r in rows if r["split_seed"] == split and r["method"] in BASELINES]
        if candidates:
            best[split] = max(candidates, key=lambda r: r["search_jcm"])
    return best


def test_jcms(rows: list, method: str) -> dict:
    """split -> test JCM of `method`; method "baseline": each split's best baseline."""
    if method == "baseline":
        return {s: r["test_jcm"] for s, r in best_baselines(rows).items()}
    return {r["split_seed"]: r["test_jcm"] for r in rows if r["method"] == method}


def test_ceilings(space: str, settings: dict, splits) -> dict:
    """split -> the Ceiling of its test part (the best JCM one score per arch reaches there,
    vit_space.scoring.ceiling): from the bench's accuracies alone, as the rows hold JCMs, not
    per-arch scores. `settings` are the results file's (data sets, accuracy kind, records)."""
    bench = open_bench(space)
    if settings.get("archs") and settings["archs"] < len(bench):
        bench = bench.head(settings["archs"])
    columns = [column_for(d, settings["acc"], space) for d in settings["datasets"]]
    out = {}
    for split in splits:
        indices = bench.split("test", split)
        out[split] = jcm_ceiling({c: bench.accuracies(indices, c) for c in columns})
    return out


def _interval_text(rows: list) -> str:
    """One split's test-JCM interval; over several, the mean of their bounds: how wide one
    split's noise is, beside the spread of the JCMs themselves across splits."""
    intervals = [r["test_interval"] for r in rows if r.get("test_interval")]
    if not intervals:
        return "-"
    low, high = statistics.mean(i[0] for i in intervals), statistics.mean(i[1] for i in intervals)
    text = f"[{low:.3f}, {high:.3f}]"
    return text if len(rows) == 1 else f"mean of {len(intervals)}: {text}"


def ceiling_table(entries: list, ceilings: dict, space: str) -> list:
    """Lines of the second table: per method, the mean test-part ceiling of its splits, its test
    JCM as a share of each split's ceiling, and the JCM's 95% interval (over several splits the
    mean of their bounds)."""
    lines = ["", f"{space}: each split's test-part ceiling (the best JCM one score per arch reaches "
             "there, ties allowed) and the test JCM's share of it (mean ± std over split seeds)",
             "", "| method | splits | ceiling (test) | share of ceiling | test JCM 95% interval |",
             "| --- | ---: | --- | --- | --- |"]
    value = {s: c.value for s, c in ceilings.items()}
    for name, per_split in entries:
        splits = sorted(s for s in per_split if s in value)
        shares = [per_split[s]["test_jcm"] / value[s] for s in splits if value[s] > 0]
        interval = _interval_text([per_split[s] for s in splits])
        lines.append(f"| {name} | {len(splits)} | {_mean_std([value[s] for s in splits])} | "
                     f"{_mean_std(shares)} | {interval} |")
    lines += ["", f"test-part ceiling over the {len(ceilings)} split(s): "
              f"{_mean_std(list(value.values()))}, without ties "
              f"{_mean_std([c.strict for c in ceilings.values()])}"]
    return lines


def table(rows: list, space: str, ceilings: dict = None) -> str:
    """The tables of docs/discovery.md; with `ceilings` (split -> test-part Ceiling, see
    test_ceilings) a second table of ceilings and shares of them follows the comparisons."""
    by_method: dict = {}
    for r in rows:
        by_method.setdefault(r["method"], {})[r["split_seed"]] = r
    best_baseline = best_baselines(rows)
    ordered = [m for m in SEARCH_ORDER if m in by_method]
    order = ordered + [m for m in BASELINES if m in by_method]
    lines = [f"{space}: test JCM over split seeds (mean ± std), tied-pair share on the test part",
             "", "| method | splits | test JCM | search JCM | tied pairs (test) | evaluations |",
             "| --- | ---: | --- | --- | ---: | ---: |"]
    entries = [(m, by_method[m]) for m in order]
    if best_baseline:
        entries.append(("best baseline (by search JCM)", best_baseline))
    for name, per_split in entries:
        rs = list(per_split.values())
        evals = [r["evaluations"] for r in rs if r["evaluations"]]
        lines.append(f"| {name} | {len(rs)} | {_mean_std([r['test_jcm'] for r in rs])} | "
                     f"{_mean_std([r['search_jcm'] for r in rs])} | "
                     f"{_mean_or_dash([r['test_tied'] for r in rs])} | "
                     f"{round(statistics.fmean(evals)) if evals else '-'} |")
    test_of = {m: test_jcms(rows, m) for m in by_method}
    lines.append("")
    searches = [m for m in ordered if m in test_of]
    common = sorted(set.intersection(*(set(test_of[m]) for m in searches), set(best_baseline))) \
        if searches else []
    if common:  # the rows above average each method over its own splits: compare like with like
        means = [f"{m} {statistics.fmean(test_of[m][s] for s in common):.3f}" for m in searches]
        means.append(f"best baseline {statistics.fmean(best_baseline[s]['test_jcm'] for s in common):.3f}")
        lines.append(f"on the {len(common)} split(s) where every search finished "
                     f"({', '.join(map(str, common))}), mean test JCM: {', '.join(means)}")
    test_of["baseline"] = test_jcms(rows, "baseline")
    for a, b in PAIRS:
        if test_of.get(a) and test_of.get(b):
            wins, n, p = paired_record(test_of[a], test_of[b])
            lines.append(f"{LABELS[a]} vs {LABELS[b]}: {wins}/{n} paired wins, Wilcoxon p = {_p_text(p)}")
    # each row carries the answer of its rule and of the rule beside it, from one search: which generalises?
    for method in ordered:
        pairs = {}
        for split, r in by_method[method].items():
            beside = r.get("beside_rule") or ("cv" if r["choice"] == "best" else "best")  # older rows
            pairs.setdefault((r["choice"], beside), {})[split] = (r["test_jcm"], r["beside_test_jcm"])
        for (rule, beside), per in pairs.items():
            ours, theirs = ({s: v[i] for s, v in per.items()} for i in (0, 1))
            wins, n, p = paired_record(ours, theirs)
            same = sum(ours[s] == theirs[s] for s in ours)
            lines.append(f"{LABELS[method]}, {RULE_WORDS[rule]} vs {RULE_WORDS[beside]} of the same run: "
                         f"{wins}/{n} paired wins ({same} tied), mean test JCM "
                         f"{statistics.fmean(ours.values()):.3f} vs {statistics.fmean(theirs.values()):.3f}, "
                         f"Wilcoxon p = {_p_text(p)}")
    if ceilings:
        lines += ceiling_table(entries, ceilings, space)
    return "\n".join(lines)


def summary_table(found: dict) -> str:
    """The README's table: per method and space, mean test JCM ± std over the split seeds it has
    (how many in brackets) and its mean share of each split's test-part ceiling; `found`: space
    -> (rows, ceilings or None)."""
    spaces = list(found)
    head = " | ".join(f"{space} | share" for space in spaces)
    lines = ["every space: test JCM over split seeds (mean ± std, [splits]) and share of the "
             "test-part ceiling", "", f"| method | {head} |",
             "| --- |" + " --- | ---: |" * len(spaces)]
    methods = [m for m in SEARCH_ORDER + ("baseline",) if any(test_jcms(rows, m) for rows, _ in found.values())]
    for method in methods + ["ceiling"]:
        cells = []
        for rows, ceilings in found.values():
            value = {s: c.value for s, c in (ceilings or {}).items()}
            per = value if method == "ceiling" else test_jcms(rows, method)
            shares = [per[s] / value[s] for s in per if value.get(s)]
            cells.append(f"{_mean_std(list(per.values()))} [{len(per)}] | "
                         + (f"{statistics.fmean(shares):.3f}" if shares else "-"))
        lines.append(f"| {LABELS.get(method, method)} | {' | '.join(cells)} |")
    return "\n".join(lines)
