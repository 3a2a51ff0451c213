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
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gp.budgets import BUDGETS  # noqa: E402
from gp.run import split_evaluator  # noqa: E402
from primitives import parse_formula  # noqa: E402
from vit_space.core.atomic import write_json_atomic  # noqa: E402
from vit_space.core.errors import BadInput  # noqa: E402
from vit_space.data.bench import column_for  # noqa: E402
from vit_space.scoring.baseline_scores import baseline_scores  # noqa: E402
from vit_space.scoring.ceiling import bootstrap_jcm  # noqa: E402
from vit_space.scoring.evaluator import JCMSettings, result_from_scores  # noqa: E402
from vit_space.setup_run import make_setup  # noqa: E402
from vit_space.stats.parallel import fill_cache  # noqa: E402
from vit_space.stats.statistics import STATS_VERSION  # noqa: E402
from vit_space.stats.terminals import vit_primitive_set  # noqa: E402
# the methods, the tables and --ship: modules of their own
from benchmarks.discovery_methods import (BASELINES, DERIVED, METHODS, method_config,  # noqa: E402
                                          runs_needed, search_options, spawned_search)
from benchmarks.discovery_ship import ship  # noqa: E402
from benchmarks.discovery_tables import summary_table, table, test_ceilings  # noqa: E402


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


def rewrite_rows(path: Path, settings: dict, change) -> None:
    """rows -> change(rows), read and rewritten atomically under an exclusive lock on a side
    file: two benchmark processes on different splits of one space (e.g. `--splits 1 2 3` and
    `--splits 9 8 7`) may share the file without losing each other's rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        write_json_atomic(path, {"settings": settings, "rows": change(load_rows(path, settings))})


def append_row(path: Path, settings: dict, row: dict) -> None:
    rewrite_rows(path, settings, lambda rows: rows + [row])


def done(rows: list, split: int, method: str) -> bool:
    return any(r["split_seed"] == split and r["method"] == method for r in rows)


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
                                      "jcm_interval": one.get("per_space_interval", {}).get(space)}


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
        fill_joint_intervals(setups, split, targets)
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


def fill_joint_intervals(setups: list, split: int, targets: list) -> None:
    """Joint rows written before a joint run's best.json held each space's own interval get it
    from their formula on that space's test part: the interval such a run records
    (gp.run.space_intervals), marked as filled in afterwards."""
    for setup, (settings, path, space) in zip(setups, targets):
        row = next(r for r in load_rows(path, settings) if r["split_seed"] == split and r["method"] == "joint")
        if row.get("test_interval") or not row.get("formula"):
            continue
        evaluator = split_evaluator(setup, "test")
        scores = evaluator.scores(parse_formula(row["formula"], vit_primitive_set()))
        filled = {"test_interval": list(bootstrap_jcm(scores, evaluator.accuracies)), "test_interval_filled": True}
        rewrite_rows(path, settings, lambda rows: [
            {**r, **filled} if r["split_seed"] == split and r["method"] == "joint" else r for r in rows])
        print(f"{space} split {split} joint: test JCM interval filled in from its formula", flush=True)


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


def load_rows_any(path: Path) -> list:
    return json.loads(path.read_text())["rows"] if path.exists() else []


def print_tables(args) -> None:
    """--table: each space's tables (with its test parts' ceilings where the bench is found),
    then the two-space summary (the README's)."""
    found = {}
    for space in args.spaces:
        path = results_path(Path(args.results), space)
        if not path.exists():
            print(f"{space}: no rows yet ({path})\n")
            continue
        data = json.loads(path.read_text())
        try:
            ceilings = test_ceilings(space, data["settings"], {r["split_seed"] for r in data["rows"]})
        except BadInput as exc:  # no bench here: the table without its ceilings
            ceilings = None
            print(f"{space}: no ceilings ({exc})")
        print(table(data["rows"], space, ceilings) + "\n")
        found[space] = (data["rows"], ceilings)
    if len(found) > 1:
        print(summary_table(found))


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
        print_tables(args)
        return
    try:
        if args.ship:
            rows_of = {space: load_rows_any(results_path(Path(args.results), space)) for space in args.spaces}
            for target in ship(args, rows_of):
                print(f"wrote {target}")
            return
        run(args)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
