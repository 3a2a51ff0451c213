"""--ship of benchmarks/discovery.py: the rule (fixed before any final fit) that picks the procedure
from the discovery rows, its fit on every record, and the shipped results/autoprox-<space>.json
with the procedure's split figures ("protocol")."""
from __future__ import annotations

import statistics
from pathlib import Path

from vit_space.core.atomic import write_json_atomic
from vit_space.core.errors import BadInput
from benchmarks.discovery_methods import ENSEMBLE_SIZE, method_config, search_options, spawned_search
from benchmarks.discovery_tables import paired_record, test_jcms

# --ship's rule, fixed before the final fit: the procedure with the highest test JCM averaged over
# the splits that every candidate finished on every space, and over the spaces (each alike)
SHIP_CANDIDATES = ("paper", "ensemble", "ensemble_params", "random_paper", "bagged", "bagged_params",
                   "joint", "large", "random")
# the run behind a method's final fit, and what its config changes
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
            wins, n, p = paired_record(ours, other)
            out[f"vs_{'best_baseline' if name == 'baseline' else name}"] = {"wins": wins, "splits": n, "wilcoxon_p": p}
    return out


def final_fit(method: str, spaces: list, args, runs: Path, rows_of: dict) -> dict:
    """The method's search with every record of the space(s) as its search part (no test part),
    seed 0: space -> best.json. A joint method fits one tree on all spaces at once; `rows_of`:
    space -> its discovery rows (the budgets some methods take from them)."""
    run_method, overrides = FIT.get(method, (method, {}))
    options = [search_options(args, space, 0) for space in spaces]
    config = method_config(run_method, None, rows_of[spaces[0]])  # budgets: the splits' mean
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


def ship(args, rows_of: dict) -> list:
    """results/autoprox-<space>.json for every space: the method SHIP_CANDIDATES' rule picks from
    the discovery rows (`rows_of`: space -> its rows), fitted on every record, with its split
    figures as "protocol"."""
    results, spaces = Path(args.results), list(args.spaces)
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
