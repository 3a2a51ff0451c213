"""Does the discovery discover? Per space and 60/40 split seed: (a) the paper budget, (b) the large
budget, (c) random search with as many evaluations as (b), (d) the hand-crafted baselines, and the
final rules that average instead of picking a maximum (ensembles of the paper run's hall of fame,
bagged searches on bootstrap resamples, one tree for both spaces) beside random search at the paper
budget; each chosen on the split's search part and scored on its test part.

Each finished (split, method) row is appended at once to results/discovery-<space>.json (atomic
rewrite), and rows already there are skipped, so the benchmark runs across sessions; a search cut
short resumes from its checkpoint under runs/discovery/. All rows of a space share one statistics
cache: only the split changes (--split-seed), never the batch.

    python benchmarks/discovery.py                       # both spaces, splits 0-9, all methods
    python benchmarks/discovery.py --spaces pit --splits 0 1 --methods paper baselines
    python benchmarks/discovery.py --table               # the docs/discovery.md tables from the JSON files
    python benchmarks/discovery.py --ship                # results/autoprox-<space>.json (below)

--ship applies a rule fixed before any final fit (SHIP_CANDIDATES: the method with the highest test
JCM averaged over the splits every candidate finished in every space, and over the spaces), runs
that method once more with every record of the space as its search part (no test part: seed 0,
runs/discovery/<space>/all/<method>), and writes its best.json as results/autoprox-<space>.json
with the method's split figures beside it ("protocol"): the shipped proxy has no test split of its
own; the splits say what to expect of it.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gp.budgets import BUDGETS, budget_config  # noqa: E402
from gp.run import evolve_with_options  # noqa: E402
from vit_space.core.atomic import write_json_atomic  # noqa: E402
from vit_space.core.errors import BadInput  # noqa: E402
from vit_space.data.bench import column_for, open_bench  # noqa: E402
from vit_space.scoring.baseline_scores import baseline_scores  # noqa: E402
from vit_space.scoring.ceiling import bootstrap_jcm, jcm_ceiling  # noqa: E402
from vit_space.scoring.evaluator import JCMSettings, result_from_scores  # noqa: E402
from vit_space.setup_run import make_setup  # noqa: E402
from vit_space.stats.parallel import fill_cache  # noqa: E402
from vit_space.stats.statistics import STATS_VERSION  # noqa: E402

# searches the benchmark runs, per space and split ("joint": one search of both spaces, a row in each)
SEARCHES = ("paper", "large", "random", "random_paper", "bagged", "joint")
# rules read off another method's run (every run reports every final rule: best.json "rules"), so
# they differ from it in the final choice alone: method -> (the run, its rule)
DERIVED = {"ensemble": ("paper", "ensemble"), "ensemble_params": ("paper", "ensemble+params"),
           "bagged_params": ("bagged", "bagged+params")}
# the direct baselines but the two costliest per model (GraSP's second-order pass, ZiCo's
# per-sample gradients: ~21 s and ~9 s of ~60 s an arch at 224 px, measured beside other jobs)
BASELINES = ("params", "flops", "grad_norm", "snip", "fisher", "synflow", "jacob_cov", "nwot", "dss")
METHODS = SEARCHES + tuple(DERIVED) + ("baselines",)
RULE_WORDS = {"cv": "cross-validated choice", "best": "best search JCM",
              "ensemble": "ensemble of the hall of fame's best",
              "ensemble+params": "ensemble of the hall of fame's best and #params",
              "bagged": "ensemble of the bags' answers", "bagged+params": "ensemble of the bags' answers and #params"}
# fixed before any row of these methods: K of the ensembles (the paper run's hall of fame), and
# the bagged method's bags, each stopping after a fifth of the paper run's evaluations on the
# split, so that the five together evaluate as many trees as it and as random_paper
ENSEMBLE_SIZE, BAGS = 5, 5


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


def results_path(results: Path, space: str) -> Path:
    return results / f"discovery-{space}.json"


def settings_of(setup) -> dict:
    """What every row of a file shares (a file made with other settings is refused)."""
    # stats_version: rows of other initial weights never mix (the rows of results/ before it came
    # from version 1, the CPU-dependent draws: a new run on them is refused, --table still reads them)
    return {"space": setup.bench.space, "archs": len(setup.bench), "datasets": setup.datasets,
            "acc": setup.acc, "stats": asdict(setup.cfg), "budgets": BUDGETS, "stats_version": STATS_VERSION}


def load_rows(path: Path, settings: dict) -> list:
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    if data["settings"] != settings:
        raise BadInput(f"{path} holds rows made with other settings; move it away or use --results")
    return data["rows"]


def append_row(path: Path, settings: dict, row: dict) -> None:
    """Read, append, rewrite atomically, under an exclusive lock on a side file: two benchmark
    processes on different splits of one space (e.g. `--splits 1 2 3` and `--splits 9 8 7`) may
    share the file without losing each other's rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = load_rows(path, settings)
        write_json_atomic(path, {"settings": settings, "rows": rows + [row]})


def done(rows: list, split: int, method: str) -> bool:
    return any(r["split_seed"] == split and r["method"] == method for r in rows)


def search_options(args, space: str, split: int) -> dict:
    """make_setup's keywords for one space and split seed, from the benchmark's flags."""
    return dict(space=space, split_seed=split, archs=args.archs, img_size=args.img_size,
                batch_size=args.batch_size, datasets=args.datasets, cache=args.cache,
                quiet=args.quiet, backend="sequential")


def spawned_search(options, config, out: Path, search_part: str = "split") -> dict:
    """evolve_with_options in a fresh process (spawned: nothing of this one is copied), so the
    memory of its statistics goes back to the system when it ends; it resumes from its
    checkpoint in OUT if cut short before. `options`: make_setup's keywords, or a list of them
    (one search of several spaces)."""
    out.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(evolve_with_options, options, config, out, True, search_part).result()


def search_row(options, split: int, method: str, config, runs: Path) -> dict:
    """One search of the protocol (spawned_search) under runs/<space or joint>/split<N>/<method>:
    its best.json with where it lies ("out")."""
    space = "joint" if isinstance(options, list) else options["space"]
    out = runs / space / f"split{split}" / method
    result = spawned_search(options, config, out)
    return {**result, "out": str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out)}


def _part(result: dict, part: str, space):
    """A part's report in best.json, for one space of a joint run (its own JCM) or the run's."""
    one = result[part]
    return one if space is None else {"jcm": one["per_space"][space], "tied_share": None,
                                      "jcm_interval": None}


def row_of(result: dict, split: int, method: str, space=None) -> dict:
    """The row of a finished search; `space`: that space's side of a joint run."""
    search, test = _part(result, "search", space), _part(result, "test", space)
    beside = result["beside"]
    return {"split_seed": split, "method": method, "evaluations": result["evaluations"],
            "seconds": result["seconds"], "stopped": result["stopped"], "formula": result["formula"],
            "members": result.get("members"),
            "search_jcm": search["jcm"], "test_jcm": test["jcm"],
            "search_tied": search["tied_share"], "test_tied": test["tied_share"],
            "test_interval": test.get("jcm_interval"),
            "choice": result["choice"], "beside_rule": beside["rule"], "beside_formula": beside["formula"],
            "beside_test_jcm": _part(beside, "test", space)["jcm"], "out": result["out"]}


def derived_row(source: dict, best: dict, split: int, method: str) -> dict:
    """The row of rule DERIVED[method][1] read off a finished run (`source`, its row; `best`, its
    best.json): the same search, another final choice; beside it, the run's own answer."""
    rule = DERIVED[method][1]
    r = best["rules"][rule]
    return {**source, "method": method, "formula": r.get("formula"), "members": r.get("members"),
            "search_jcm": r["search_jcm"], "test_jcm": r["test_jcm"], "search_tied": r["search_tied"],
            "test_tied": r["test_tied"], "test_interval": r["test_interval"], "choice": rule,
            "beside_rule": source["choice"], "beside_formula": source["formula"],
            "beside_test_jcm": source["test_jcm"], "derived_from": DERIVED[method][0]}


def baseline_rows(setup, split: int, all_scores: dict) -> list:
    """One row per baseline: its scores over all archs (computed once), sliced to the split."""
    rows = []
    columns = {d: column_for(d, setup.acc, setup.bench.space) for d in setup.datasets}
    parts = {part: setup.bench.split(part, setup.split_seed) for part in ("search", "test")}
    for name in all_scores:
        row = {"split_seed": split, "method": name, "evaluations": 0, "seconds": None, "formula": None}
        for part, indices in parts.items():
            scores = {columns[d]: all_scores[name][d][indices] for d in setup.datasets}
            acc = {c: setup.bench.accuracies(indices, c) for c in scores}
            js = result_from_scores(scores, acc, JCMSettings()).as_json()
            row[f"{part}_jcm"], row[f"{part}_tied"] = js["jcm"], js["tied_share"]
            if part == "test":  # the 95% bootstrap interval, as best.json has it for searches
                row["test_interval"] = list(bootstrap_jcm(scores, acc))
        rows.append(row)
    return rows


def prefill(setup) -> None:
    """Statistics of all the space's archs, last item first: an extraction filling the same cache
    in the usual order meets this one halfway instead of racing it item by item."""
    archs = setup.bench.archs(range(len(setup.bench)))
    items = [(setup.bench.space, arch, d) for d in setup.datasets for arch in archs][::-1]
    fill_cache(setup.cache, items, setup.cfg, progress=setup.progress, label="all archs, reversed")


def method_config(method: str, split: int, rows: list):
    """The SearchConfig of a search method on split `split` (`rows`: the space's rows so far)."""
    def evaluations_of(source: str, default: int) -> int:
        found = [r for r in rows if r["split_seed"] == split and r["method"] == source]
        return found[0]["evaluations"] if found else default
    if method == "random":  # as many evaluations as the large budget spent here
        return budget_config("large", strategy="random", evals=evaluations_of("large", BUDGETS["large"]["evals"]),
                             seed=split)
    if method == "random_paper":  # as many evaluations as the paper budget spent here
        return budget_config("paper", strategy="random", evals=evaluations_of("paper", 450), seed=split)
    if method == "bagged":  # the paper run's evaluations here, shared out among the bags
        return budget_config("paper", choose="bagged", bags=BAGS, evals=evaluations_of("paper", 450) // BAGS,
                             seed=split)
    config = budget_config("large" if method == "large" else "paper", seed=split)
    if method in ("paper", "joint"):
        config.checkpoint_every = 50
    return config


def runs_needed(methods: list) -> list:
    """The searches behind `methods`, in the order they must run: a derived rule needs its run,
    a random control the run whose evaluations it matches."""
    wanted = set(methods) | {DERIVED[m][0] for m in methods if m in DERIVED}
    wanted |= {"paper" for m in wanted if m in ("random_paper", "bagged")} | {"large" for m in wanted if m == "random"}
    return [m for m in SEARCHES if m in wanted and m != "joint"]


def write_derived(path: Path, settings: dict, split: int, methods: list) -> None:
    """Rows of the derived methods asked for whose run has a row but they have none."""
    for method in (m for m in methods if m in DERIVED):
        rows = load_rows(path, settings)
        source = next((r for r in rows if r["split_seed"] == split and r["method"] == DERIVED[method][0]), None)
        if source is not None and not done(rows, split, method):
            best = json.loads((ROOT / source["out"] / "best.json").read_text())
            append_row(path, settings, derived_row(source, best, split, method))


def run_searches(setup, options: dict, split: int, methods: list, results: Path, runs: Path) -> None:
    settings, path = settings_of(setup), results_path(results, setup.bench.space)
    todo = [m for m in runs_needed(methods) if not done(load_rows(path, settings), split, m)]
    if todo:
        prefill(setup)
    for method in todo:
        started = time.perf_counter()
        config = method_config(method, split, load_rows(path, settings))
        row = row_of(search_row(options, split, method, config, runs), split, method)
        append_row(path, settings, row)
        print(f"{setup.bench.space} split {split} {method}: test JCM {row['test_jcm']:.4f} "
              f"({row['evaluations']} evaluations, {time.perf_counter() - started:.0f} s) "
              f"{row['formula'] or row['members']}", flush=True)
    write_derived(path, settings, split, methods)


def run_joint(setups: list, options: list, split: int, results: Path, runs: Path) -> None:
    """One tree for every space (the mean of their JCMs as fitness, the paper budget); a row in
    each space's file with that space's own search and test JCM."""
    targets = [(settings_of(s), results_path(results, s.bench.space), s.bench.space) for s in setups]
    if all(done(load_rows(path, settings), split, "joint") for settings, path, _ in targets):
        return
    for setup in setups:
        prefill(setup)
    result = search_row(options, split, "joint", method_config("joint", split, []), runs)
    for settings, path, space in targets:
        if not done(load_rows(path, settings), split, "joint"):
            append_row(path, settings, row_of(result, split, "joint", space))
    print(f"joint split {split}: test JCM " + ", ".join(
        f"{space} {result['test']['per_space'][space]:.4f}" for _, _, space in targets)
        + f" {result['formula']}", flush=True)


def run_baselines(setup, split: int, results: Path, scores_of: dict, names=BASELINES) -> None:
    """Baseline rows of the split for `names`; scores over all archs are computed (or read from
    their disk cache) once per space and process, in `scores_of`. Baselines are split-independent,
    so once scored they give a row for every split at no cost."""
    space = setup.bench.space
    settings, path = settings_of(setup), results_path(results, space)
    if all(done(load_rows(path, settings), split, name) for name in names):
        return
    if space not in scores_of:
        archs = setup.bench.archs(range(len(setup.bench)))  # all, in record order
        scores_of[space] = baseline_scores(names, space, archs, setup.datasets, setup.cfg,
                                           setup.cache.root, setup.device, "all", 1, "sequential",
                                           None, setup.progress)
    for row in baseline_rows(setup, split, scores_of[space]):
        if not done(load_rows(path, settings), split, row["method"]):
            append_row(path, settings, row)
    print(f"{space} split {split}: baselines written", flush=True)


def run(args) -> None:
    """Split by split; within one, the searches of every space first, then the baselines (their
    first scoring of all archs is the longest step), so partial results cover every space."""
    results, runs = Path(args.results), Path(args.runs)
    results.mkdir(parents=True, exist_ok=True)
    scores_of = {}
    for split in args.splits:
        options = [search_options(args, space, split) for space in args.spaces]
        setups = [make_setup(**o) for o in options]
        for setup, o in zip(setups, options):
            run_searches(setup, o, split, args.methods, results, runs)
        if "joint" in args.methods:
            if len(setups) < 2:
                raise BadInput("--methods joint: expected two or more --spaces (one tree for them all)")
            run_joint(setups, options, split, results, runs)
        if "baselines" in args.methods:
            for setup in setups:
                run_baselines(setup, split, results, scores_of, args.baselines)


# ---------------------------------------------------------------------------------- table

def _mean_std(values: list) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {std:.3f}"


def _mean_or_dash(values: list) -> str:
    """The mean of the values known (a joint run's rows have no per-space tied share)."""
    known = [v for v in values if v is not None]
    return f"{statistics.fmean(known):.3f}" if known else "-"


def _paired(a: dict, b: dict) -> tuple:
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


def _interval_text(row: dict) -> str:
    interval = row.get("test_interval")
    return f"[{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "-"


def ceiling_table(entries: list, ceilings: dict, space: str) -> list:
    """Lines of the second table: per method, the mean test-part ceiling of its splits, its test
    JCM as a share of each split's ceiling, and (one split shown) the JCM's 95% interval."""
    lines = ["", f"{space}: each split's test-part ceiling (the best JCM one score per arch reaches "
             "there, ties allowed) and the test JCM's share of it (mean ± std over split seeds)",
             "", "| method | splits | ceiling (test) | share of ceiling | test JCM 95% interval |",
             "| --- | ---: | --- | --- | --- |"]
    value = {s: c.value for s, c in ceilings.items()}
    for name, per_split in entries:
        splits = sorted(s for s in per_split if s in value)
        shares = [per_split[s]["test_jcm"] / value[s] for s in splits if value[s] > 0]
        interval = _interval_text(per_split[splits[0]]) if len(splits) == 1 else "-"
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
            wins, n, p = _paired(test_of[a], test_of[b])
            lines.append(f"{LABELS[a]} vs {LABELS[b]}: {wins}/{n} paired wins, Wilcoxon p = {_p_text(p)}")
    # each row carries the answer of its rule and of the rule beside it, from one search: which generalises?
    for method in ordered:
        pairs = {}
        for split, r in by_method[method].items():
            beside = r.get("beside_rule") or ("cv" if r["choice"] == "best" else "best")  # older rows
            pairs.setdefault((r["choice"], beside), {})[split] = (r["test_jcm"], r["beside_test_jcm"])
        for (rule, beside), per in pairs.items():
            ours, theirs = ({s: v[i] for s, v in per.items()} for i in (0, 1))
            wins, n, p = _paired(ours, theirs)
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


# --ship's rule, fixed before the final fit: the procedure with the highest test JCM averaged over
# the splits that every candidate finished on every space, and over the spaces (each alike)
SHIP_CANDIDATES = ("paper", "ensemble", "ensemble_params", "random_paper", "bagged", "bagged_params",
                   "joint", "large", "random")
FIT = {"ensemble": ("paper", dict(choose="ensemble", ensemble=ENSEMBLE_SIZE)),  # the final fit's run
       "ensemble_params": ("paper", dict(choose="ensemble", ensemble=ENSEMBLE_SIZE, with_params=True)),
       "bagged_params": ("bagged", dict(with_params=True))}


def shipped_method(rows_of: dict) -> tuple:
    """(method, {method: mean test JCM over spaces and common splits}, the common splits) by
    SHIP_CANDIDATES' rule; `rows_of`: space -> its rows. Ties go to the earlier candidate."""
    present = [m for m in SHIP_CANDIDATES if all(test_jcms(rows, m) for rows in rows_of.values())]
    if not present:
        raise BadInput("--ship: no method has rows in every space's results (expected finished "
                       "splits: python benchmarks/discovery.py)")
    common = set.intersection(*(set(test_jcms(rows, m)) for rows in rows_of.values() for m in present))
    if not common:
        raise BadInput(f"--ship: the methods {', '.join(present)} share no split in every space")
    means = {m: statistics.fmean(statistics.fmean(test_jcms(rows, m)[s] for s in common)
                                 for rows in rows_of.values()) for m in present}
    return max(present, key=lambda m: (means[m], -present.index(m))), means, sorted(common)


def protocol_figures(rows: list, method: str) -> dict:
    """The method's test JCM per split and its paired record against Algorithm 1, both random
    controls and each split's best baseline: what a user of the shipped proxy can expect."""
    ours = dict(sorted(test_jcms(rows, method).items()))  # by split seed, not by finish
    values = list(ours.values())
    out = {"method": method, "splits": len(values), "test_jcm": ours,
           "test_jcm_mean": statistics.fmean(values) if values else None,
           "test_jcm_std": statistics.stdev(values) if len(values) > 1 else None}
    for name in ("paper", "random_paper", "large", "random", "baseline"):
        other = test_jcms(rows, name)
        if other and name != method:
            wins, n, p = _paired(ours, other)
            out[f"vs_{'best_baseline' if name == 'baseline' else name}"] = {"wins": wins, "splits": n, "wilcoxon_p": p}
    return out


def final_fit(method: str, spaces: list, args, runs: Path, rows_of: dict) -> dict:
    """The method's search with every record of the space(s) as its search part (no test part),
    seed 0: space -> best.json. A joint method fits one tree on all spaces at once; `rows_of`:
    space -> its discovery rows (the budgets some methods take from them)."""
    run_method, overrides = FIT.get(method, (method, {}))
    options = [search_options(args, space, 0) for space in spaces]
    config_rows = rows_of[spaces[0]]
    if method == "random_paper":  # as many evaluations as the paper budget spent on average
        evals = round(statistics.fmean(r["evaluations"] for r in config_rows if r["method"] == "paper"))
        config = budget_config("paper", strategy="random", evals=evals, seed=0)
    else:
        config = method_config(run_method, 0, config_rows)
        for name, value in overrides.items():
            setattr(config, name, value)
    groups = [options] if method == "joint" else [[o] for o in options]
    fits = {}
    for group in groups:
        out = runs / ("joint" if method == "joint" else group[0]["space"]) / "all" / method
        best = spawned_search(group if method == "joint" else group[0], config, out, "all")
        for o in group:
            fits[o["space"]] = best
    return fits


def load_rows_any(path: Path) -> list:
    return json.loads(path.read_text())["rows"] if path.exists() else []


def ship(args) -> list:
    """results/autoprox-<space>.json for every space: the method SHIP_CANDIDATES' rule picks from
    the discovery rows, fitted on every record, with its ten-split figures as "protocol"."""
    results, spaces = Path(args.results), list(args.spaces)
    rows_of = {space: load_rows_any(results_path(results, space)) for space in spaces}
    method, means, common = shipped_method(rows_of)
    print(f"--ship: {method} (mean test JCM over {len(common)} common split(s) and {len(spaces)} "
          f"space(s): " + ", ".join(f"{m} {v:.4f}" for m, v in sorted(means.items(), key=lambda kv: -kv[1]))
          + ")", flush=True)
    fits = final_fit(method, spaces, args, Path(args.runs), rows_of)
    written = []
    for space in spaces:
        target = results / f"autoprox-{space}.json"
        write_json_atomic(target, {**fits[space], "shipped_space": space,
                                   "protocol": {**protocol_figures(rows_of[space], method),
                                                "rule": "highest mean test JCM over common splits and spaces",
                                                "common_splits": common, "candidates": means}})
        written.append(target)
    return written


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spaces", nargs="+", default=["autoformer", "pit"])
    p.add_argument("--splits", nargs="+", type=int, default=list(range(10)))
    p.add_argument("--methods", nargs="+", choices=METHODS,
                   help="default: all (joint only with two or more --spaces)")
    p.add_argument("--baselines", nargs="+", default=list(BASELINES), choices=BASELINES,
                   help="the baselines scored (rows are per baseline: others can follow later)")
    p.add_argument("--table", action="store_true", help="print the tables from the JSON files")
    p.add_argument("--ship", action="store_true",
                   help="fit the method the rows pick (highest mean test JCM) on every record and "
                   "write results/autoprox-<space>.json")
    p.add_argument("--results", default=str(ROOT / "results"), help="where discovery-<space>.json go")
    p.add_argument("--runs", default=str(ROOT / "runs" / "discovery"), help="search outputs")
    p.add_argument("--archs", type=int, help="first N bench records (tests)")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--datasets", default="c100,flowers,chaoyang")
    p.add_argument("--cache", help="statistics cache (default: $AUTOPROX_CACHE or ~/.cache/autoprox)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.methods is None:
        args.methods = [m for m in METHODS if m != "joint" or len(args.spaces) > 1]
    if args.table:
        found = {}
        for space in args.spaces:
            path = results_path(Path(args.results), space)
            if path.exists():
                data = json.loads(path.read_text())
                try:
                    ceilings = test_ceilings(space, data["settings"], {r["split_seed"] for r in data["rows"]})
                except BadInput as exc:  # no bench here: the table without its ceilings
                    ceilings = None
                    print(f"{space}: no ceilings ({exc})")
                print(table(data["rows"], space, ceilings) + "\n")
                found[space] = (data["rows"], ceilings)
            else:
                print(f"{space}: no rows yet ({path})\n")
        if len(found) > 1:
            print(summary_table(found))
        return
    try:
        if args.ship:
            for target in ship(args):
                print(f"wrote {target}")
            return
        run(args)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
