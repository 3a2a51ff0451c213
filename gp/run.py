"""One Auto-Prox search from data settings to result files: the library behind runners/evolve.py.

Fitness is JCM on the search split only, and so is the final choice (best JCM, the
cross-validated choice or the ensemble of gp.choice, or the bagged searches of gp.bagging); the
test split is evaluated at the end, for the answer, the candidate reported beside it and every
other rule's answer (best.json "rules"), and never seen by the search.
"""
from __future__ import annotations

from dataclasses import asdict
from functools import partial
from pathlib import Path
from statistics import fmean

import numpy as np

from vit_space.core.atomic import write_json_atomic
from gp.choice import cross_validate, cv_choice, ensemble_members, ensemble_result, hall_of_fame
from gp.bagging import bag_rows, bag_searches, bagged_history, first_checkpoint, run_bags
from gp.creator_setup import as_individual
from gp.plots import plot_history
from gp.search import Search, SearchConfig, best_individual, new_search
from gp.selection import pareto_front
from primitives import parse_formula
from vit_space.data.bench import column_for
from vit_space.scoring.ceiling import (Ceiling, bootstrap_values, ceiling_fields, ceiling_share,
                                       jcm_ceiling, percentile_interval)
from vit_space.scoring.evaluator import JCMSettings, ProxyEvaluator
from vit_space.scoring.jcm import WORST
from vit_space.scoring.joint import JointEvaluator
from vit_space.setup_run import DataSetup
from vit_space.stats.terminals import vit_primitive_set


SEARCH_PARTS = ("split", "all")  # the seeded 60% of the records, or every record (no test part)


def data_identity(s, aggregate: str, search_part: str = "split") -> dict:
    """Every data setting that changes fitness values (compared on --resume); for several spaces
    searched as one, each space's."""
    if isinstance(s, (list, tuple)):
        return {"spaces": [data_identity(one, aggregate, search_part) for one in s]}
    return {"space": s.bench.space, "bench": s.bench.path, "archs": len(s.bench),
            "datasets": s.datasets, "acc": s.acc, "stats": asdict(s.cfg), "aggregate": aggregate,
            "split_seed": s.split_seed, **({"search_part": "all"} if search_part == "all" else {})}


def split_evaluator(s: DataSetup, split: str, aggregate: str = "sum",
                    settings: JCMSettings = JCMSettings()) -> ProxyEvaluator:
    return ProxyEvaluator(s.bench, s.bench.split(split, s.split_seed), s.datasets, s.acc, s.cfg,
                          s.cache, s.device, aggregate, settings, s.progress, s.n_jobs,
                          s.backend, s.scheduler, label=f"{split} split")


def part_evaluator(setups: list, part: str, aggregate: str = "sum"):
    """The evaluator of one part of the records, "search" or "test", of one space or of several
    searched as one (a JointEvaluator); with search_part "all" the search part is every record."""
    evaluators = {s.bench.space: split_evaluator(s, part, aggregate) for s in setups}
    return evaluators[setups[0].bench.space] if len(setups) == 1 else JointEvaluator(evaluators)


def part_json(evaluator, result, ceiling: Ceiling = None) -> dict:
    """A ProxyResult as best.json reports it; a joint search adds each space's own JCM. With the
    part's `ceiling`: it, the JCM's 95% bootstrap interval and the JCM's share of the ceiling."""
    out = result.as_json()
    if isinstance(evaluator, JointEvaluator):
        out["per_space"] = evaluator.space_jcms(result.scores)
    if ceiling is not None:
        out.update(ceiling_fields(ceiling), ceiling_share=ceiling_share(result.jcm, ceiling.value))
        if isinstance(evaluator, JointEvaluator):  # the spaces' resamples, drawn once for both fields
            each = space_bootstraps(evaluator, result.scores)
            out.update(jcm_interval=joint_interval(each), per_space_interval=intervals_of(each))
        else:
            out["jcm_interval"] = part_interval(evaluator, result)
    return out


def part_ceiling(evaluator) -> Ceiling:
    """The best JCM one score per arch can reach on the part's archs (vit_space.scoring.ceiling);
    of a joint search the mean of the spaces' ceilings, as its JCM is the mean of their JCMs."""
    if not isinstance(evaluator, JointEvaluator):
        return jcm_ceiling(evaluator.accuracies)
    ceilings = [jcm_ceiling(e.accuracies) for e in evaluator.evaluators.values()]
    return Ceiling(fmean(c.value for c in ceilings), None, fmean(c.strict for c in ceilings))


def part_interval(evaluator, result) -> list:
    """[low, high], the 95% bootstrap interval of the part's JCM (archs resampled, seeded: the
    same on a resumed run); a joint search resamples each space's archs and averages the JCMs."""
    if not isinstance(evaluator, JointEvaluator):
        return list(percentile_interval(bootstrap_values(result.scores, evaluator.accuracies)))
    return joint_interval(space_bootstraps(evaluator, result.scores))


def joint_interval(each: dict) -> list:
    """The interval of the mean of the spaces' resampled JCMs (WORST where any space's is)."""
    values = np.stack(list(each.values()))
    return list(percentile_interval(np.where((values == WORST).any(0), WORST, values.mean(0))))


def space_bootstraps(evaluator: JointEvaluator, scores: dict) -> dict:
    """{space: its JCM on each bootstrap resample of its archs} of a joint part's scores."""
    per = evaluator.per_space(scores)
    return {space: bootstrap_values(per[space], e.accuracies) for space, e in evaluator.evaluators.items()}


def space_intervals(evaluator: JointEvaluator, scores: dict) -> dict:
    """{space: [low, high]}, the 95% bootstrap interval of each space's own JCM: what a search
    on that space alone would report for the same scores."""
    return intervals_of(space_bootstraps(evaluator, scores))


def intervals_of(each: dict) -> dict:
    return {space: list(percentile_interval(values)) for space, values in each.items()}


def evolve(s, config: SearchConfig, out: Path, resume: bool = False,
           aggregate: str = "sum", stop_after=None, toolbox_hook=None, search_part: str = "split") -> dict:
    """Run (or resume) a search; write best.json, history.json, jcm.png and the checkpoint.
    `s` is one DataSetup or a list of them (one tree for several spaces: the fitness is the mean
    of their JCMs). `search_part` "all" searches on every record and leaves no test part (the
    fit of a procedure already judged on held-out splits). `toolbox_hook(toolbox)` may
    re-register operators (ablations) before the run."""
    setups = list(s) if isinstance(s, (list, tuple)) else [s]
    s = setups[0] if len(setups) == 1 else setups  # one space: its own identity, as before
    if search_part not in SEARCH_PARTS:
        raise ValueError(f"search_part {search_part!r}: expected one of {SEARCH_PARTS}")
    pset = vit_primitive_set()
    identity = {"search": asdict(config), "data": data_identity(s, aggregate, search_part)}
    bagged = config.choose == "bagged"
    if resume:  # a missing, damaged or foreign checkpoint fails before any extraction
        Search.load_resumable(first_checkpoint(out, config), {**identity, "bag": 0} if bagged else identity)
    search_name = "all" if search_part == "all" else "search"
    for one in setups if search_part != "all" else []:  # the test part is scored at the end: validate it now
        test_indices = one.bench.split("test", one.split_seed)
        for dataset in one.datasets:
            one.bench.accuracies(test_indices, column_for(dataset, one.acc, one.bench.space))
    search_eval = part_evaluator(setups, search_name, aggregate)
    n_jobs, progress = setups[0].n_jobs, setups[0].progress
    if bagged:
        searches = bag_searches(search_eval, pset, config, out, identity, n_jobs, toolbox_hook)
        stopped_bag = run_bags(searches, resume, progress, stop_after)
        finished, history = stopped_bag is None, bagged_history(searches)
    else:
        searches = [new_search(search_eval, pset, config, out / "checkpoint.json", identity, n_jobs,
                               toolbox_hook)]
        searches[0].run(resume=resume, progress=progress, stop_after=stop_after)
        finished, history = searches[0].finished, searches[0].state.history
    seconds = sum(one.seconds for one in searches)  # one reading each: the clocks run on
    seconds_this_run = seconds - sum(one.seconds_before for one in searches)
    write_json_atomic(out / "history.json", history)
    spaces = ",".join(one.bench.space for one in setups)
    ceilings = {"search": part_ceiling(search_eval)}  # once per report, never per candidate
    plot_history(history, out / "jcm.png", f"Auto-Prox search, {spaces}", ceilings["search"].value)
    if not finished:
        last = searches[stopped_bag] if bagged else searches[0]
        return {"finished": False, "iteration": last.state.iteration, **({"bag": stopped_bag} if bagged else {})}
    test_eval = None if search_part == "all" else part_evaluator(setups, "test", aggregate)
    ceilings["test"] = part_ceiling(test_eval) if test_eval else None
    answers, candidates = final_answers(searches, {"search": search_eval, "test": test_eval}, ceilings,
                                        pset, config)
    report = {
        **answers["chosen"], "space": spaces, "choice": config.choose,
        "search_part": "every record (no test part)" if search_part == "all" else "the 60% search split",
        "config": {**asdict(config), **data_identity(s, aggregate, search_part), "device": setups[0].device},
        "beside": answers["beside"],
        "evaluations": sum(len(one.memo) for one in searches),
        "evaluations_this_run": sum(one.fitness.evaluations for one in searches),
        "stopped": searches[-1].stop_reason(), "iterations": sum(one.state.iteration for one in searches),
        "seconds": round(seconds, 2),
        "seconds_this_run": round(seconds_this_run, 2), "rejects": _summed_rejects(searches),
        "hall_of_fame": answers["hall_of_fame"], **({"bags": answers["bags"]} if bagged else {}),
        # every rule's answer from this one search, so a benchmark compares rules on equal terms
        "rules": answers["rules"],
    }
    write_json_atomic(out / "best.json", report)
    write_json_atomic(out / "pareto.json", [
        {"formula": str(ind), "jcm": ind.fitness.values[0], "size": len(ind)}
        # of a bagged run its answers (JCM on the whole part), not bags' resample JCMs mixed
        for ind in pareto_front(candidates if bagged else searches[0].state.population)])
    return {"finished": True, **report}


def final_answers(searches: list, parts: dict, ceilings: dict, pset, config: SearchConfig) -> tuple:
    """Every final rule's answer from a finished search, each scored once on the search part and
    the test part (parts["test"] None: none); returns ({"chosen": the rule config.choose names,
    "beside": the rule reported beside it, "rules": each rule in brief, "hall_of_fame": the
    cross-validation rows, "bags": the bags' rows or None}, the candidates)."""
    best, candidates, member_lists, bags = final_candidates(searches, parts["search"], pset, config)
    rows = cross_validate(parts["search"], candidates, config.folds, config.seed)
    cv = cv_choice(rows)
    answers_of: dict = {}

    def scored(rule: str) -> dict:
        if rule in answers_of:
            return answers_of[rule]
        if rule in member_lists:
            members = member_lists[rule]
            answer, result = {"formula": None, "members": members}, partial(ensemble_result, members=members, pset=pset)
        else:
            tree = best if rule == "best" else parse_formula(cv["formula"], pset)
            answer, result = {"formula": str(tree)}, lambda e: e.evaluate(tree)
        for part, e in parts.items():
            answer[part] = part_json(e, result(e), ceilings[part]) if e else None
        answers_of[rule] = answer
        return answer

    group = "bagged" if config.choose == "bagged" else "ensemble"
    chosen = f"{group}+params" if config.choose == group and config.with_params else config.choose
    beside = "cv" if config.choose == "best" else "best"
    return {"chosen": scored(chosen), "beside": {"rule": beside, **scored(beside)},
            "rules": {rule: rule_summary(scored(rule)) for rule in ("best", "cv", *member_lists)},
            "hall_of_fame": rows, "bags": bags}, candidates


def final_candidates(searches: list, search_eval, pset, config: SearchConfig) -> tuple:
    """What the final rules choose from, on the search part alone: (Algorithm 1's answer, the
    candidates of the cross-validated choice, {rank-average rule: its members}, the bags' rows
    or None). A plain search: its best, its hall of fame, the hall of fame's K best; bagged: the
    bag answer best on the whole part, the distinct bag answers, every bag's answer (one found
    twice counts twice). Each rank-average rule also comes with #params as a member."""
    if config.choose == "bagged":
        bags = bag_rows(searches, search_eval)
        answers = [as_individual(parse_formula(row["formula"], pset)) for row in bags]
        candidates = list({str(t): t for t in answers}.values())
        for tree in candidates:
            tree.fitness.values = (search_eval.evaluate(tree).jcm,)
        best = max(candidates, key=lambda t: t.fitness.values[0])
        group, pool, size = "bagged", answers, len(answers)
    else:
        search, bags = searches[0], None
        best = best_individual(search.state.population)
        candidates = hall_of_fame(search.fitness.memo, search.fitness.phenotypes, pset, config.hof, first=best)
        group, pool, size = "ensemble", candidates, config.ensemble
    members = {group: ensemble_members(pool, size), f"{group}+params": ensemble_members(pool, size, True)}
    return best, candidates, members, bags


def rule_summary(answer: dict) -> dict:
    """A rule's answer in brief: its formula or members and its JCM on each part."""
    out = {"formula": answer["formula"]} if answer["formula"] else {"members": answer["members"]}
    for part in ("search", "test"):
        out[f"{part}_jcm"] = answer[part]["jcm"] if answer[part] else None
        out[f"{part}_tied"] = answer[part]["tied_share"] if answer[part] else None
    out["test_interval"] = answer["test"].get("jcm_interval") if answer["test"] else None
    return out


def _summed_rejects(searches: list) -> dict:
    out: dict = {}
    for one in searches:
        for reason, count in one.state.rejects.items():
            out[reason] = out.get(reason, 0) + count
    return out


def evolve_with_options(options, config: SearchConfig, out: Path, resume: bool = False,
                        search_part: str = "split") -> dict:
    """evolve() on make_setup(**options) (a list of options: one search of those spaces):
    picklable arguments, so a benchmark can run each search in a fresh process whose memory (the
    evaluator's stacked statistics) is returned when it ends. With `resume`, a checkpoint of other
    settings is replaced by a fresh run."""
    from vit_space.core.errors import BadInput
    from vit_space.setup_run import make_setup
    setup = [make_setup(**o) for o in options] if isinstance(options, list) else make_setup(**options)
    if resume and first_checkpoint(out, config).exists():
        try:
            return evolve(setup, config, Path(out), resume=True, search_part=search_part)
        except BadInput:
            pass
    return evolve(setup, config, Path(out), search_part=search_part)
