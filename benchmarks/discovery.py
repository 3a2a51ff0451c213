"""Does the discovery discover? Per space and 60/40 split seed: (a) the paper budget, (b) the large
budget, (c) random search with as many evaluations as (b), (d) the hand-crafted baselines, each
chosen on the split's search part and scored on its test part.

Each finished (split, method) row is appended at once to results/discovery-<space>.json (atomic
rewrite), and rows already there are skipped, so the benchmark runs across sessions; a search cut
short resumes from its checkpoint under runs/discovery/. All rows of a space share one statistics
cache: only the split changes (--split-seed), never the batch.

    python benchmarks/discovery.py                       # both spaces, splits 0-9, all methods
    python benchmarks/discovery.py --spaces pit --splits 0 1 --methods paper baselines
    python benchmarks/discovery.py --table               # the docs/discovery.md tables from the JSON files
    python benchmarks/discovery.py --ship                # results/autoprox-<space>.json (below)

--ship writes what the protocol picks as the shipped proxy of each space: the large budget's
cross-validated choice on split seed 0 (the runners' default split; chosen on its search part
alone), with the protocol's figures over every split run so far beside it.
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

SEARCHES = ("paper", "large", "random", "ensemble")  # ensemble: the paper budget, --choose ensemble
SHIP_SPLIT, SHIP_METHOD = 0, "large"  # the shipped proxy: what the protocol picks on split 0
# the direct baselines but the two costliest per model (GraSP's second-order pass, ZiCo's
# per-sample gradients: ~21 s and ~9 s of ~60 s an arch at 224 px, measured beside other jobs)
BASELINES = ("params", "flops", "grad_norm", "snip", "fisher", "synflow", "jacob_cov", "nwot", "dss")
METHODS = SEARCHES + ("baselines",)
RULE_WORDS = {"cv": "cross-validated choice", "ensemble": "ensemble of the hall of fame's best"}
ENSEMBLE_SIZE = 5  # members of the ensemble method's answer, fixed before any of its rows


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


def search_row(setup, options: dict, split: int, method: str, config, runs: Path) -> dict:
    """One search in a fresh process (spawned: nothing of this one is copied), so the memory of
    its statistics goes back to the system when it ends; it resumes from its checkpoint if cut
    short before."""
    out = runs / setup.bench.space / f"split{split}" / method
    out.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        result = pool.submit(evolve_with_options, options, config, out, True).result()
    return {"split_seed": split, "method": method, "evaluations": result["evaluations"],
            "seconds": result["seconds"], "stopped": result["stopped"], "formula": result["formula"],
            "members": result.get("members"),
            "search_jcm": result["search"]["jcm"], "test_jcm": result["test"]["jcm"],
            "search_tied": result["search"]["tied_share"], "test_tied": result["test"]["tied_share"],
            "test_interval": result["test"].get("jcm_interval"),
            "choice": result["choice"], "beside_formula": result["beside"]["formula"],
            "beside_test_jcm": result["beside"]["test"]["jcm"],
            "out": str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out)}


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


def run_searches(setup, options: dict, split: int, methods: list, results: Path, runs: Path) -> None:
    settings, path = settings_of(setup), results_path(results, setup.bench.space)
    todo = [m for m in methods if m in SEARCHES and not done(load_rows(path, settings), split, m)]
    if todo:
        prefill(setup)
    for method in todo:
        overrides = {"seed": split}
        if method == "random":  # as many evaluations as the large budget spent here
            large = [r for r in load_rows(path, settings)
                     if r["split_seed"] == split and r["method"] == "large"]
            evals = large[0]["evaluations"] if large else BUDGETS["large"]["evals"]
            config = budget_config("large", strategy="random", evals=evals, **overrides)
        elif method == "ensemble":
            config = budget_config("paper", choose="ensemble", ensemble=ENSEMBLE_SIZE, **overrides)
            config.checkpoint_every = 50
        else:
            config = budget_config(method, **overrides)
            if method == "paper":
                config.checkpoint_every = 50
        started = time.perf_counter()
        row = search_row(setup, options, split, method, config, runs)
        append_row(path, settings, row)
        print(f"{setup.bench.space} split {split} {method}: test JCM {row['test_jcm']:.4f} "
              f"({row['evaluations']} evaluations, {time.perf_counter() - started:.0f} s) "
              f"{row['formula']}", flush=True)


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
        options = [dict(space=space, split_seed=split, archs=args.archs, img_size=args.img_size,
                        batch_size=args.batch_size, datasets=args.datasets, cache=args.cache,
                        quiet=args.quiet, backend="sequential") for space in args.spaces]
        setups = [make_setup(**o) for o in options]
        for setup, o in zip(setups, options):
            run_searches(setup, o, split, args.methods, results, runs)
        if "baselines" in args.methods:
            for setup in setups:
                run_baselines(setup, split, results, scores_of, args.baselines)


# ---------------------------------------------------------------------------------- table

def _mean_std(values: list) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {std:.3f}"


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
    order = [m for m in SEARCHES if m in by_method] + [m for m in BASELINES if m in by_method]
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
                     f"{statistics.fmean(r['test_tied'] for r in rs):.3f} | "
                     f"{round(statistics.fmean(evals)) if evals else '-'} |")
    test_of = {m: test_jcms(rows, m) for m in by_method}
    lines.append("")
    searches = [m for m in SEARCHES if m in test_of]
    common = sorted(set.intersection(*(set(test_of[m]) for m in searches), set(best_baseline))) \
        if searches else []
    if common:  # the rows above average each method over its own splits: compare like with like
        means = [f"{m} {statistics.fmean(test_of[m][s] for s in common):.3f}" for m in searches]
        means.append(f"best baseline {statistics.fmean(best_baseline[s]['test_jcm'] for s in common):.3f}")
        lines.append(f"on the {len(common)} split(s) where every search finished "
                     f"({', '.join(map(str, common))}), mean test JCM: {', '.join(means)}")
    labels = {"large": "large (b)", "random": "random search (c)", "paper": "paper budget (a)",
              "ensemble": "ensemble (paper budget, --choose ensemble)", "baseline": "each split's best baseline"}
    test_of["baseline"] = test_jcms(rows, "baseline")
    # (b) against the control and Algorithm 1, Algorithm 1 against the control, and both (b) and
    # the control against the baselines: if random search beats them too, the lead is not evolution's
    for a, b in (("large", "random"), ("large", "paper"), ("paper", "random"),
                 ("large", "baseline"), ("random", "baseline"),
                 ("ensemble", "paper"), ("ensemble", "large"), ("ensemble", "random"), ("ensemble", "baseline")):
        if test_of.get(a) and test_of.get(b):
            wins, n, p = _paired(test_of[a], test_of[b])
            lines.append(f"{labels[a]} vs {labels[b]}: {wins}/{n} paired wins, Wilcoxon p = {_p_text(p)}")
    # each search reports both final rules (its answer and the one beside it): which generalises?
    for method in searches:
        # the rule a search answers with against the one it reports beside (best <-> cv; an
        # ensemble's beside is the best JCM)
        rules = [r["choice"] for r in by_method[method].values()]
        first = "ensemble" if "ensemble" in rules else "cv"
        rule = {first: {}, "best": {}}
        for split, r in by_method[method].items():
            other = "cv" if r["choice"] == "best" else "best"
            rule[r["choice"]][split], rule[other][split] = r["test_jcm"], r["beside_test_jcm"]
        wins, n, p = _paired(rule[first], rule["best"])
        same = sum(rule[first][split] == rule["best"][split] for split in rule[first])
        cv, best = (statistics.fmean(rule[k].values()) for k in (first, "best"))
        lines.append(f"{labels[method]}, {RULE_WORDS[first]} vs best search JCM of the same run: "
                     f"{wins}/{n} paired wins ({same} tied), mean test JCM {cv:.3f} vs {best:.3f}, "
                     f"Wilcoxon p = {_p_text(p)}")
    if ceilings:
        lines += ceiling_table(entries, ceilings, space)
    return "\n".join(lines)


def protocol_figures(rows: list) -> dict:
    """The large budget's test JCM per split and its paired record against random search and
    each split's best baseline: what a user of the shipped proxy can expect from the protocol."""
    large = dict(sorted(test_jcms(rows, SHIP_METHOD).items()))  # by split seed, not by finish
    values = list(large.values())
    out = {"method": SHIP_METHOD, "splits": len(values), "test_jcm": large,
           "test_jcm_mean": statistics.fmean(values) if values else None,
           "test_jcm_std": statistics.stdev(values) if len(values) > 1 else None}
    others = {"random": test_jcms(rows, "random"),
              "best_baseline": test_jcms(rows, "baseline")}
    for name, other in others.items():
        wins, n, p = _paired(large, other)
        out[f"vs_{name}"] = {"wins": wins, "splits": n, "wilcoxon_p": p}
    return out


def ship(results: Path, space: str) -> Path:
    """results/autoprox-<space>.json: the split-0 large run's best.json, plus protocol_figures."""
    path = results_path(results, space)
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    row = next((r for r in rows if r["split_seed"] == SHIP_SPLIT and r["method"] == SHIP_METHOD), None)
    if row is None:
        raise BadInput(f"--ship: {path} has no {SHIP_METHOD} row for split seed {SHIP_SPLIT} "
                       "(expected a finished run: python benchmarks/discovery.py --splits 0)")
    best_path = ROOT / row["out"] / "best.json"  # an absolute "out" stays as it is
    if not best_path.is_file():
        raise BadInput(f"--ship: {best_path} is missing (expected the run the row was made from)")
    best = json.loads(best_path.read_text())
    if best["formula"] != row["formula"]:
        raise BadInput(f"--ship: {best_path} holds {best['formula']}, the row {row['formula']}")
    target = results / f"autoprox-{space}.json"
    write_json_atomic(target, {**best, "protocol": protocol_figures(rows)})
    return target


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spaces", nargs="+", default=["autoformer", "pit"])
    p.add_argument("--splits", nargs="+", type=int, default=list(range(10)))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--baselines", nargs="+", default=list(BASELINES), choices=BASELINES,
                   help="the baselines scored (rows are per baseline: others can follow later)")
    p.add_argument("--table", action="store_true", help="print the tables from the JSON files")
    p.add_argument("--ship", action="store_true",
                   help="write results/autoprox-<space>.json from the split-0 large run")
    p.add_argument("--results", default=str(ROOT / "results"), help="where discovery-<space>.json go")
    p.add_argument("--runs", default=str(ROOT / "runs" / "discovery"), help="search outputs")
    p.add_argument("--archs", type=int, help="first N bench records (tests)")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--datasets", default="c100,flowers,chaoyang")
    p.add_argument("--cache", help="statistics cache (default: $AUTOPROX_CACHE or ~/.cache/autoprox)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.table:
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
            else:
                print(f"{space}: no rows yet ({path})\n")
        return
    try:
        if args.ship:
            for space in args.spaces:
                print(f"{space}: wrote {ship(Path(args.results), space)}")
            return
        run(args)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
