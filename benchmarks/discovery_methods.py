"""The discovery protocol's methods (benchmarks/discovery.py): which searches it runs, the rules
read off them, the baselines, and how one search of a method is configured and run (in a fresh
process, resuming from its checkpoint)."""
from __future__ import annotations

import multiprocessing
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from gp.budgets import BUDGETS, budget_config
from gp.run import evolve_with_options

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
# fixed before any row of these methods: K of the ensembles (the paper run's hall of fame), and
# the bagged method's bags, each stopping after a fifth of the paper run's evaluations on the
# split, so that the five together evaluate as many trees as it and as random_paper
ENSEMBLE_SIZE, BAGS = 5, 5


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


def method_config(method: str, split, rows: list):
    """The SearchConfig of a search method on split `split` (`rows`: the space's rows so far);
    split None: the fit on every record (seed 0), whose budgets are the mean over the splits."""
    def evaluations_of(source: str, default: int) -> int:
        found = [r["evaluations"] for r in rows if r["method"] == source and split in (None, r["split_seed"])]
        return round(statistics.fmean(found)) if found else default
    seed = 0 if split is None else split
    if method == "random":  # as many evaluations as the large budget spent here
        return budget_config("large", strategy="random", evals=evaluations_of("large", BUDGETS["large"]["evals"]),
                             seed=seed)
    if method == "random_paper":  # as many evaluations as the paper budget spent here
        return budget_config("paper", strategy="random", evals=evaluations_of("paper", 450), seed=seed)
    if method == "bagged":  # the paper run's evaluations here, shared out among the bags
        return budget_config("paper", choose="bagged", bags=BAGS, evals=evaluations_of("paper", 450) // BAGS,
                             seed=seed)
    config = budget_config("large" if method == "large" else "paper", seed=seed)
    if method in ("paper", "joint"):
        config.checkpoint_every = 50
    return config


def runs_needed(methods: list) -> list:
    """The searches behind `methods`, in the order they must run: a derived rule needs its run,
    a random control the run whose evaluations it matches."""
    wanted = set(methods) | {DERIVED[m][0] for m in methods if m in DERIVED}
    wanted |= {"paper" for m in wanted if m in ("random_paper", "bagged")} | {"large" for m in wanted if m == "random"}
    return [m for m in SEARCHES if m in wanted and m != "joint"]
