"""One Auto-Prox search from data settings to result files: the library behind runners/evolve.py.

Fitness is JCM on the search split only; the test split is evaluated once, for the final best
proxy, and never seen by the search.
"""
from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path

from vit_space.atomic import write_json_atomic
from gp.fitness import MemoFitness
from gp.plots import plot_history
from gp.search import Search, SearchConfig, best_individual, make_toolbox
from vit_space.bench import column_for
from vit_space.evaluator import JCMSettings, ProxyEvaluator
from vit_space.setup_run import DataSetup
from vit_space.terminals import vit_primitive_set


def data_identity(s: DataSetup, aggregate: str) -> dict:
    """Every data setting that changes fitness values (compared on --resume)."""
    return {"space": s.bench.space, "bench": s.bench.path, "archs": len(s.bench),
            "datasets": s.datasets, "acc": s.acc, "stats": asdict(s.cfg), "aggregate": aggregate}


def split_evaluator(s: DataSetup, split: str, aggregate: str = "sum",
                    settings: JCMSettings = JCMSettings()) -> ProxyEvaluator:
    return ProxyEvaluator(s.bench, s.bench.split(split, s.cfg.seed), s.datasets, s.acc, s.cfg,
                          s.cache, s.device, aggregate, settings, s.progress, s.n_jobs,
                          s.backend, s.scheduler)


def evolve(s: DataSetup, config: SearchConfig, out: Path, resume: bool = False,
           aggregate: str = "sum", stop_after=None, toolbox_hook=None) -> dict:
    """Run (or resume) a search; write best.json, history.json, jcm.png and the checkpoint.
    `toolbox_hook(toolbox)` may re-register operators (ablations) before the run."""
    pset = vit_primitive_set()
    identity = {"search": asdict(config), "data": data_identity(s, aggregate)}
    if resume:  # a missing, damaged or foreign checkpoint fails before any extraction
        Search.load_resumable(out / "checkpoint.json", identity)
    test_indices = s.bench.split("test", s.cfg.seed)  # scored only at the end: validate it now
    for dataset in s.datasets:
        s.bench.accuracies(test_indices, column_for(dataset, s.acc, s.bench.space))
    search_eval = split_evaluator(s, "search", aggregate)
    fitness = MemoFitness(search_eval, config.max_nodes)
    rng = random.Random(config.seed)
    toolbox = make_toolbox(pset, fitness, config, rng)
    if toolbox_hook:
        toolbox_hook(toolbox)
    search = Search(toolbox, pset, config, rng, fitness.memo, out / "checkpoint.json", identity)
    state = search.run(resume=resume, progress=s.progress, stop_after=stop_after)
    write_json_atomic(out / "history.json", state.history)
    plot_history(state.history, out / "jcm.png", f"Auto-Prox search, {s.bench.space}")
    if state.iteration < config.iters:
        return {"finished": False, "iteration": state.iteration}
    best = best_individual(state.population)
    test_eval = split_evaluator(s, "test", aggregate)
    report = {
        "formula": str(best), "space": s.bench.space,
        "config": {**asdict(config), **data_identity(s, aggregate), "device": s.device},
        "search": search_eval.evaluate(best).as_json(),
        "test": test_eval.evaluate(best).as_json(),
        "evaluations": fitness.evaluations, "rejects": state.rejects,
    }
    write_json_atomic(out / "best.json", report)
    return {"finished": True, **report}
