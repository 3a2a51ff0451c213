"""One Auto-Prox search from data settings to result files: the library behind runners/evolve.py.

Fitness is JCM on the search split only, and so is the final choice (best JCM, or the
cross-validated choice of gp.choice); the test split is evaluated at the end, for the answer and
the candidate reported beside it, and never seen by the search.
"""
from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path

from vit_space.core.atomic import write_json_atomic
from gp.choice import cross_validate, cv_choice, hall_of_fame
from gp.fitness import MemoFitness
from gp.plots import plot_history
from gp.search import Search, SearchConfig, best_individual, make_toolbox
from gp.selection import pareto_front
from primitives import parse_formula
from vit_space.data.bench import column_for
from vit_space.scoring.evaluator import JCMSettings, ProxyEvaluator
from vit_space.setup_run import DataSetup
from vit_space.stats.terminals import vit_primitive_set


def data_identity(s: DataSetup, aggregate: str) -> dict:
    """Every data setting that changes fitness values (compared on --resume)."""
    return {"space": s.bench.space, "bench": s.bench.path, "archs": len(s.bench),
            "datasets": s.datasets, "acc": s.acc, "stats": asdict(s.cfg), "aggregate": aggregate,
            "split_seed": s.split_seed}


def split_evaluator(s: DataSetup, split: str, aggregate: str = "sum",
                    settings: JCMSettings = JCMSettings()) -> ProxyEvaluator:
    return ProxyEvaluator(s.bench, s.bench.split(split, s.split_seed), s.datasets, s.acc, s.cfg,
                          s.cache, s.device, aggregate, settings, s.progress, s.n_jobs,
                          s.backend, s.scheduler, label=f"{split} split")


def evolve(s: DataSetup, config: SearchConfig, out: Path, resume: bool = False,
           aggregate: str = "sum", stop_after=None, toolbox_hook=None) -> dict:
    """Run (or resume) a search; write best.json, history.json, jcm.png and the checkpoint.
    `toolbox_hook(toolbox)` may re-register operators (ablations) before the run."""
    pset = vit_primitive_set()
    identity = {"search": asdict(config), "data": data_identity(s, aggregate)}
    if resume:  # a missing, damaged or foreign checkpoint fails before any extraction
        Search.load_resumable(out / "checkpoint.json", identity)
    test_indices = s.bench.split("test", s.split_seed)  # scored only at the end: validate it now
    for dataset in s.datasets:
        s.bench.accuracies(test_indices, column_for(dataset, s.acc, s.bench.space))
    search_eval = split_evaluator(s, "search", aggregate)
    fitness = MemoFitness(search_eval, config.max_nodes)
    rng = random.Random(config.seed)
    toolbox = make_toolbox(pset, fitness, config, rng, n_jobs=s.n_jobs)
    if toolbox_hook:
        toolbox_hook(toolbox)
    search = Search(toolbox, pset, config, rng, fitness, out / "checkpoint.json", identity)
    state = search.run(resume=resume, progress=s.progress, stop_after=stop_after)
    seconds = search.seconds  # one reading: the clock runs on
    seconds_this_run = seconds - search.seconds_before
    write_json_atomic(out / "history.json", state.history)
    plot_history(state.history, out / "jcm.png", f"Auto-Prox search, {s.bench.space}")
    if not search.finished:
        return {"finished": False, "iteration": state.iteration}
    best = best_individual(state.population)
    candidates = hall_of_fame(fitness.memo, fitness.phenotypes, pset, config.hof, first=best)
    rows = cross_validate(search_eval, candidates, config.folds, config.seed)
    cv = cv_choice(rows)
    answer = best if config.choose == "best" else parse_formula(cv["formula"], pset)
    test_eval = split_evaluator(s, "test", aggregate)

    def scored(tree) -> dict:
        return {"formula": str(tree), "search": search_eval.evaluate(tree).as_json(),
                "test": test_eval.evaluate(tree).as_json()}
    other = parse_formula(cv["formula"], pset) if config.choose == "best" else best
    report = {
        **scored(answer), "space": s.bench.space, "choice": config.choose,
        "config": {**asdict(config), **data_identity(s, aggregate), "device": s.device},
        "beside": {"rule": "cv" if config.choose == "best" else "best", **scored(other)},
        "evaluations": len(fitness.memo), "evaluations_this_run": fitness.evaluations,
        "stopped": search.stop_reason(), "iterations": state.iteration,
        "seconds": round(seconds, 2),
        "seconds_this_run": round(seconds_this_run, 2), "rejects": state.rejects, "hall_of_fame": rows,
    }
    write_json_atomic(out / "best.json", report)
    write_json_atomic(out / "pareto.json", [
        {"formula": str(ind), "jcm": ind.fitness.values[0], "size": len(ind)}
        for ind in pareto_front(state.population)])
    return {"finished": True, **report}


def evolve_with_options(options: dict, config: SearchConfig, out: Path, resume: bool = False) -> dict:
    """evolve() on make_setup(**options): picklable arguments, so a benchmark can run each search
    in a fresh process whose memory (the evaluator's stacked statistics) is returned when it ends.
    With `resume`, a checkpoint of other settings is replaced by a fresh run."""
    from vit_space.core.errors import BadInput
    from vit_space.setup_run import make_setup
    setup = make_setup(**options)
    if resume and (Path(out) / "checkpoint.json").exists():
        try:
            return evolve(setup, config, Path(out), resume=True)
        except BadInput:
            pass
    return evolve(setup, config, Path(out))

