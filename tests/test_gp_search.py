"""The search loop end to end on tiny real statistics: the first 12 AutoFormer archs, tiny_cfg
(32 px), the c100 accuracies, read from the session cache (extracted once). Determinism, exact
resume (in process and after `kill -9` of the runner), resume safety, result files, ablation
flags and toolbox hooks."""

import argparse
import copy
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gp.checkpoint import load_checkpoint
from gp.run import evolve, split_evaluator
from gp.search import SearchConfig
from primitives import parse_formula
from runners import evolve as evolve_runner
from vit_space.setup_run import data_setup
from vit_space.stats.terminals import vit_primitive_set

ROOT = Path(__file__).resolve().parents[1]
DATASETS = "c100"
COLUMN = "c100_kd_acc"


def data_args(cache_root, cfg):
    """What runners' data options parse into, for the statistics settings `cfg`."""
    assert cfg.data_root is None
    return argparse.Namespace(
        space="autoformer", bench=None, datasets=DATASETS, acc="kd", archs=12, data_root=None,
        batch_size=cfg.batch_size, img_size=cfg.img_size, seed=cfg.seed, rows=cfg.rows or 0,
        tokens=cfg.tokens or 0, device="cpu", cache=str(cache_root), jobs=1,
        backend="sequential", scheduler=None, quiet=True)


@pytest.fixture(scope="module")
def setup(session_cache, tiny_cfg):
    """The data of every run here; its statistics are the session cache's (tiny_cfg)."""
    s = data_setup(data_args(session_cache.root, tiny_cfg))
    assert s.cfg == tiny_cfg and len(s.bench) == 12 and s.datasets == [DATASETS]
    return s


def cache_files(root):
    return sorted(p.name for p in Path(root).rglob("*.joblib"))


@pytest.fixture(scope="module")
def cli_common(setup):
    """Runner options giving the same data as `setup` (so the subprocesses only read the cache)."""
    split_evaluator(setup, "all")  # fill the cache: 12 archs x 1 data set
    assert len(cache_files(setup.cache.root)) >= 12
    a = data_args(setup.cache.root, setup.cfg)
    return ["--archs", "12", "--img-size", str(a.img_size), "--batch-size", str(a.batch_size),
            "--rows", str(a.rows), "--tokens", str(a.tokens), "--seed", str(a.seed),
            "--datasets", DATASETS, "--cache", a.cache, "--backend", "sequential", "--quiet"]


TIMINGS = ("seconds", "seconds_this_run")


def timeless(data: dict) -> dict:
    """A result or checkpoint without its wall-clock figures (the only fields two runs may differ in)."""
    return {k: v for k, v in data.items() if k not in TIMINGS}


def read(path):
    return json.loads(Path(path).read_text())


def run_main(argv, capsys):
    """runners/evolve.py's main in process: (exit status, stderr)."""
    capsys.readouterr()
    try:
        evolve_runner.main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


# ---------------------------------------------------------------------------- in process

TINY = dict(pop=6, iters=8, checkpoint_every=1)


@pytest.fixture(scope="module")
def seed0_run(setup, cli_common, tmp_path_factory):
    out = tmp_path_factory.mktemp("seed0")
    result = evolve(setup, SearchConfig(seed=0, **TINY), out)
    assert result["finished"]
    return out, result


def test_same_seed_same_run_different_seed_different_run(setup, seed0_run, tmp_path):
    out0, result0 = seed0_run
    again = evolve(setup, SearchConfig(seed=0, **TINY), tmp_path / "again")
    other = evolve(setup, SearchConfig(seed=1, **TINY), tmp_path / "other")
    history0 = (out0 / "history.json").read_text()
    assert (tmp_path / "again" / "history.json").read_text() == history0
    assert again["formula"] == result0["formula"]
    assert timeless(read(tmp_path / "again" / "best.json")) == timeless(read(out0 / "best.json"))
    assert len(read(out0 / "history.json")) == TINY["iters"] + 1
    assert (tmp_path / "other" / "history.json").read_text() != history0
    assert other["config"]["seed"] == 1


RESUMABLE = {  # uniform, crossover and the double tournament also draw from `random`
    "node": {}, "uniform": dict(mutate="uniform"),
    "cx-parsimony": dict(cxpb=0.5, parsimony=True, tie_tol=0.02, choose="cv"),
    "double": dict(select="double", cxpb=0.3),
    "nsga2": dict(select="nsga2", cxpb=0.5),
    "random": dict(strategy="random", evals=60),
}


@pytest.mark.parametrize("variant", list(RESUMABLE))
def test_stop_and_resume_equals_uninterrupted(variant, setup, seed0_run, tmp_path):
    config = SearchConfig(seed=0, **{**TINY, **RESUMABLE[variant]})
    if variant == "node":
        out0, result0 = seed0_run
    else:
        out0 = tmp_path / "uninterrupted"
        result0 = evolve(setup, config, out0)
    out = tmp_path / "resumed"
    partial = evolve(setup, config, out, stop_after=3)
    assert partial == {"finished": False, "iteration": 3}
    assert not (out / "best.json").exists()
    checkpoint = load_checkpoint(out / "checkpoint.json")
    assert checkpoint["iteration"] == 3 and len(checkpoint["history"]) == 4
    evaluated_before = len(checkpoint["memo"])
    # the partial history is the uninterrupted run's prefix
    assert read(out / "history.json") == read(out0 / "history.json")[:4]
    random.seed(12345)  # as in a new process: only the checkpoint may carry the RNG states
    resumed = evolve(setup, config, out, resume=True)
    assert resumed["finished"] and resumed["formula"] == result0["formula"]
    assert (out / "history.json").read_text() == (out0 / "history.json").read_text()
    a, b = read(out / "best.json"), read(out0 / "best.json")
    for key in ("formula", "config", "search", "test", "rejects"):
        assert a[key] == b[key], key
    # the final checkpoints are identical (population, RNG states, memo...)
    final = load_checkpoint(out / "checkpoint.json")
    assert timeless(final) == timeless(load_checkpoint(out0 / "checkpoint.json"))
    # the seconds are the whole search's: the stopped part's carried over, this run's added
    assert resumed["seconds"] == pytest.approx(checkpoint["seconds"] + resumed["seconds_this_run"], abs=0.02)
    assert 0 < checkpoint["seconds"] < resumed["seconds"]
    # the memo came back with the checkpoint: nothing was evaluated twice
    assert result0["evaluations"] == len(load_checkpoint(out0 / "checkpoint.json")["memo"])
    assert resumed["evaluations"] == result0["evaluations"]
    assert resumed["evaluations_this_run"] == result0["evaluations"] - evaluated_before
    assert read(out / "pareto.json") == read(out0 / "pareto.json")
    assert read(out / "best.json")["hall_of_fame"] == read(out0 / "best.json")["hall_of_fame"]


def test_toolbox_hook_operator_is_used(setup, tmp_path):
    calls = []

    def hook(tb):
        original = tb.mutate

        def counting_mutate(tree):
            calls.append(str(tree))
            return original(tree)

        tb.register("mutate", counting_mutate)

    result = evolve(setup, SearchConfig(seed=0, pop=6, iters=5), tmp_path, toolbox_hook=hook)
    assert result["finished"]
    history = read(tmp_path / "history.json")
    # every try of every iteration went through the custom operator, and nothing else did
    assert len(calls) == sum(h["tries"] for h in history) >= 5


def test_a_search_that_evaluates_nothing_new_stops_on_patience(setup, tmp_path):
    """Every child a copy of its parent: no new tree is ever evaluated, and the search stops after
    `patience` such iterations instead of spinning through a budget of a million iterations."""
    def hook(tb):
        tb.register("mutate", lambda tree: copy.deepcopy(tree))

    result = evolve(setup, SearchConfig(seed=0, pop=6, iters=10**6, patience=7), tmp_path,
                    toolbox_hook=hook)
    assert result["finished"] and result["stopped"] == "patience"
    history = read(tmp_path / "history.json")
    assert result["iterations"] == len(history) - 1 == 7
    assert {h["evaluations"] for h in history} == {result["evaluations"]}
    # patience 0 never stops a search: it runs its iterations
    again = evolve(setup, SearchConfig(seed=0, pop=6, iters=12, patience=0), tmp_path / "off",
                   toolbox_hook=hook)
    assert again["stopped"] == "iterations" and again["iterations"] == 12


# ---------------------------------------------------------------------------- the runner

@pytest.fixture(scope="module")
def reference(cli_common, tmp_path_factory):
    """An uninterrupted 40-iteration run of the runner (in process, same argv as the CLI)."""
    out = tmp_path_factory.mktemp("reference")
    argv = cli_common + ["--pop", "6", "--iters", "40", "--checkpoint-every", "1", "--out", str(out)]
    evolve_runner.main(argv)
    return out


def test_outputs(reference, cli_common, tmp_path):
    best = read(reference / "best.json")
    assert {"formula", "space", "config", "search", "test"} <= set(best)
    assert best["space"] == "autoformer"
    for split in ("search", "test"):
        assert set(best[split]) == {"jcm", "datasets", "tied_pairs", "tied_share", "ceiling",
                                    "ceiling_strict", "jcm_interval", "ceiling_share"}
        assert 0 <= best[split]["tied_share"] <= 1
        assert set(best[split]["datasets"]) == {COLUMN}
    assert best["config"]["pop"] == 6 and best["config"]["iters"] == 40
    assert best["stopped"] == "iterations" and best["iterations"] == 40
    assert best["config"]["archs"] == 12 and best["config"]["datasets"] == [DATASETS]
    history = read(reference / "history.json")
    assert isinstance(history, list) and [h["iter"] for h in history] == list(range(41))
    # one tie-break rule: history's last best formula is best.json's (issue 13, item 8)
    assert history[-1]["best_formula"] == best["formula"] and best["choice"] == "best"
    # phenotype duplicates never enter: every member ranks the search archs its own way
    assert all(h["phenotypes"] == 6 for h in history)
    assert best["evaluations"] == history[-1]["evaluations"] > 0 and best["seconds"] >= 0
    for h in history:
        assert {"iter", "best", "mean", "tries", "rejects"} <= set(h)
        assert h["mean"] <= h["best"] + 1e-12 and 0 <= h["rejects"] <= h["tries"]
    assert all(1 <= h["tries"] <= 10 for h in history[1:])
    bests = [h["best"] for h in history]
    assert all(b2 >= b1 for b1, b2 in zip(bests, bests[1:]))
    assert best["search"]["jcm"] == pytest.approx(bests[-1], abs=1e-12)
    # the reported proxy is the final population's best (ties: fewest nodes, then by name)
    population = load_checkpoint(reference / "checkpoint.json")["population"]
    pset = vit_primitive_set()
    formula, value = max(population, key=lambda fv: (fv[1], -len(parse_formula(fv[0], pset)), fv[0]))
    assert best["formula"] == formula and best["search"]["jcm"] == pytest.approx(value, abs=1e-12)
    png = reference / "jcm.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the test entry is what rank.py reports for the formula on the test split
    report_path = tmp_path / "rank.json"
    proc = subprocess.run([sys.executable, "runners/rank.py", *cli_common, "--proxy", best["formula"],
                           "--split", "test", "--json", str(report_path)],
                          cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = read(report_path)
    assert report["split"] == "test"
    (entry,) = report["proxies"].values()
    assert entry["jcm"] == pytest.approx(best["test"]["jcm"], abs=1e-12)
    assert set(entry["datasets"]) == set(best["test"]["datasets"])
    for column, corr in best["test"]["datasets"].items():
        assert entry["datasets"][column]["kendall"] == pytest.approx(corr["kendall"], abs=1e-12)


def child_env():
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def checkpoint_iteration(path):
    try:
        return json.loads(Path(path).read_text())["payload"]["iteration"]
    except (OSError, ValueError, KeyError):
        return None


def start_and_kill(argv, out, moment, log):
    """Start runners/evolve.py; SIGKILL it once its checkpoint reaches iteration `moment`.
    Returns the iterations the checkpoint went through while it ran."""
    seen = []
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "runners/evolve.py", *argv], cwd=ROOT,
                                env=child_env(), stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            it = checkpoint_iteration(out / "checkpoint.json")
            if it is not None and (not seen or seen[-1] != it):
                seen.append(it)
            if it is not None and it >= moment:
                proc.send_signal(signal.SIGKILL)
                break
            if proc.poll() is not None:
                pytest.fail(f"the run ended before it could be killed: {log.read_text()[-500:]}")
            time.sleep(0.01)
        else:
            pytest.fail(f"the checkpoint never reached iteration {moment}")
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return seen


def test_kill_9_and_resume_equals_uninterrupted(reference, cli_common, tmp_path, capsys):
    """SIGKILL the runner at two moments of one search of 40 iterations: once it has checkpointed
    iteration 2, and, after a --resume, once it has checkpointed iteration 14. A last --resume
    then ends exactly where the uninterrupted run did."""
    cache_root = cli_common[cli_common.index("--cache") + 1]
    before = cache_files(cache_root)
    out = tmp_path / "run"
    argv = [*cli_common, "--pop", "6", "--iters", "40", "--checkpoint-every", "1", "--out", str(out)]
    ref_history = read(reference / "history.json")

    start_and_kill(argv, out, 2, tmp_path / "first.log")
    first = checkpoint_iteration(out / "checkpoint.json")
    assert 2 <= first < 40 and not (out / "best.json").exists()
    assert load_checkpoint(out / "checkpoint.json")["history"] == ref_history[:first + 1]

    seen = start_and_kill(argv + ["--resume"], out, 14, tmp_path / "second.log")
    assert min(seen) >= first  # it went on from the checkpoint, not from scratch
    second = checkpoint_iteration(out / "checkpoint.json")
    assert 14 <= second < 40 and not (out / "best.json").exists()
    assert load_checkpoint(out / "checkpoint.json")["history"] == ref_history[:second + 1]

    # run again with --resume, to completion (in process: the same main, the same argv)
    code, err = run_main(argv + ["--resume"], capsys)
    assert code == 0, err
    best, ref_best = read(out / "best.json"), read(reference / "best.json")
    assert best["formula"] == ref_best["formula"]
    assert best["search"] == ref_best["search"] and best["test"] == ref_best["test"]
    assert (out / "history.json").read_text() == (reference / "history.json").read_text()
    assert timeless(load_checkpoint(out / "checkpoint.json")) == \
        timeless(load_checkpoint(reference / "checkpoint.json"))
    # the runs only read the pre-filled statistics cache
    assert cache_files(cache_root) == before


def copy_run(reference, dest):
    shutil.copytree(reference, dest)
    return dest


def one_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_resume_with_other_configuration_is_refused(reference, cli_common, tmp_path, capsys):
    out = copy_run(reference, tmp_path / "run")
    original = (out / "checkpoint.json").read_bytes()
    argv = cli_common + ["--pop", "6", "--iters", "40", "--checkpoint-every", "1", "--out", str(out),
                         "--resume"]
    code, err = run_main(argv + ["--margin", "0.2"], capsys)
    line = one_line(err)
    assert code == 2 and "checkpoint.json" in line
    assert "(search.margin differ)" in line  # the differing setting, and only it, is named
    code, err = run_main(argv + ["--aggregate", "mean"], capsys)  # a data setting
    line = one_line(err)
    assert code == 2 and "(data.aggregate differ)" in line
    code, err = run_main(argv + ["--margin", "0.2", "--mutate", "shrink"], capsys)
    assert code == 2 and "(search.margin, search.mutate differ)" in one_line(err)
    assert (out / "checkpoint.json").read_bytes() == original  # left as it was
    # the same configuration resumes fine (a finished run: it only rewrites the results)
    code, err = run_main(argv, capsys)
    assert code == 0, err


def test_resume_with_damaged_or_missing_checkpoint(reference, cli_common, tmp_path, capsys):
    argv = cli_common + ["--pop", "6", "--iters", "40", "--checkpoint-every", "1", "--resume"]
    # a changed byte that still parses as JSON: caught by the checksum
    out = copy_run(reference, tmp_path / "changed")
    text = (out / "checkpoint.json").read_text()
    assert text.count('"iteration": 40') == 1
    (out / "checkpoint.json").write_text(text.replace('"iteration": 40', '"iteration": 30'))
    code, err = run_main(argv + ["--out", str(out)], capsys)
    line = one_line(err)
    assert code == 2 and str(out / "checkpoint.json") in line and "damaged" in line
    # a truncated file
    out = copy_run(reference, tmp_path / "truncated")
    data = (out / "checkpoint.json").read_bytes()
    (out / "checkpoint.json").write_bytes(data[: len(data) // 2])
    code, err = run_main(argv + ["--out", str(out)], capsys)
    line = one_line(err)
    assert code == 2 and str(out / "checkpoint.json") in line
    # no checkpoint at all
    code, err = run_main(argv + ["--out", str(tmp_path / "empty")], capsys)
    line = one_line(err)
    assert code == 2 and "--resume" in line and "checkpoint" in line
    assert not (tmp_path / "empty" / "best.json").exists()


@pytest.mark.parametrize("flags,key,expected", [
    (["--select", "tournament"], "select", "tournament"),
    (["--mutate", "uniform"], "mutate", "uniform"),
    (["--mutate", "shrink"], "mutate", "shrink"),
    (["--mutate", "insert"], "mutate", "insert"),
    (["--no-elitism"], "elitism", False),
])
def test_ablation_flags_run_to_completion(flags, key, expected, reference, cli_common, tmp_path,
                                         capsys):
    code, err = run_main(cli_common + ["--pop", "6", "--iters", "4", "--out", str(tmp_path), *flags],
                         capsys)
    assert code == 0, err
    best = read(tmp_path / "best.json")
    assert best["config"][key] == expected
    history = read(tmp_path / "history.json")
    assert [h["iter"] for h in history] == list(range(5))
    assert best["formula"] and -1 <= best["test"]["jcm"] <= 1
    # same seed and data as the reference run: the same start, then the flag changes the search
    ref_history = read(reference / "history.json")[:5]
    assert history[0] == ref_history[0]
    # --no-elitism can only change a run whose reference had to retry after a valid child
    retried = any(h["tries"] > h["rejects"] + 1 for h in ref_history[1:])
    if "--no-elitism" not in flags or retried:
        assert history[1:] != ref_history[1:]
    if "--no-elitism" in flags:  # the first valid child is taken: no retry after a valid one
        for h in history[1:]:
            assert h["tries"] == h["rejects"] + 1 or h["tries"] == h["rejects"] == 10, h
            assert h["met_margin"] is (h["tries"] == h["rejects"] + 1)


@pytest.mark.parametrize("flags,flag", [
    (["--mutate", "nope"], "--mutate"),
    (["--select", "nope"], "--select"),
    (["--p-node", "2"], "--p-node"),
    (["--pop", "1"], "--pop"),
    (["--ratio", "0"], "--ratio"),
    (["--max-tries", "0"], "--max-tries"),
    (["--tournsize", "0", "--select", "tournament"], "--tournsize"),
    (["--max-nodes", "1"], "--max-nodes"),
])
def test_bad_search_values_exit_2(flags, flag, cli_common, tmp_path, capsys):
    code, err = run_main(cli_common + ["--out", str(tmp_path / "o"), *flags], capsys)
    line = one_line(err)
    assert code == 2 and flag in line and flags[1] in line
    assert not (tmp_path / "o" / "checkpoint.json").exists()


# ---------------------------------------------------------------------------- discovery (issue 10)

def test_random_strategy_uses_the_evaluations_of_the_compared_budget(setup, tmp_path):
    """--strategy random spends exactly the evaluations an evolution spent, drawn from the
    initial population's generator, and ends with the same kind of result files."""
    evolved = evolve(setup, SearchConfig(seed=0, pop=6, iters=1000, evals=40, cxpb=0.5,
                                         choose="cv"), tmp_path / "evolve")
    assert evolved["finished"] and 40 <= evolved["evaluations"] < 40 + 10  # stops at the budget
    drawn = evolve(setup, SearchConfig(seed=0, pop=6, strategy="random", choose="cv",
                                       evals=evolved["evaluations"]), tmp_path / "random")
    assert drawn["finished"] and drawn["evaluations"] == evolved["evaluations"]
    assert evolved["stopped"] == drawn["stopped"] == "evaluations"
    history = read(tmp_path / "random" / "history.json")
    assert history[-1]["evaluations"] == evolved["evaluations"]
    assert all(h["phenotypes"] == 6 for h in history)
    # the first population is drawn as the evolution's is (same generator, same seed)
    assert history[0] == read(tmp_path / "evolve" / "history.json")[0]
    assert drawn["choice"] == "cv" and drawn["formula"] in {r["formula"] for r in drawn["hall_of_fame"]}


def test_nsga2_front_is_non_dominated(setup, tmp_path):
    result = evolve(setup, SearchConfig(seed=0, pop=8, iters=4, select="nsga2", cxpb=0.5),
                    tmp_path)
    assert result["finished"]
    front = read(tmp_path / "pareto.json")
    population = load_checkpoint(tmp_path / "checkpoint.json")["population"]
    pset = vit_primitive_set()
    members = [(v, len(parse_formula(f, pset))) for f, v in population]
    assert front and len(front) <= len(members)

    def dominates(a, b):  # JCM up, size down
        return a[0] >= b[0] and a[1] <= b[1] and a != b
    for entry in front:
        point = (entry["jcm"], entry["size"])
        assert point in members and not any(dominates(m, point) for m in members)
    # every member off the front is dominated by one on it
    on_front = {(e["jcm"], e["size"]) for e in front}
    for m in members:
        assert m in on_front or any(dominates(p, m) for p in on_front)


def shuffled_test_accuracies(setup):
    """The same setup with the test archs' accuracies permuted among themselves."""
    import dataclasses
    from vit_space.data.bench import Bench, column_for
    records = [dict(r) for r in setup.bench.records]
    test = setup.bench.split("test", setup.split_seed)
    column = column_for(DATASETS, "kd", "autoformer")
    values = [records[i][column] for i in test]
    for i, v in zip(test, values[1:] + values[:1]):
        records[i][column] = v
    return dataclasses.replace(setup, bench=Bench(setup.bench.space, setup.bench.path, records))


def test_cross_validated_choice_never_reads_test_archs(setup, tmp_path):
    """Corrupting the test accuracies changes the test JCMs reported, and nothing else: the hall
    of fame, its fold JCMs and the cross-validated choice come from the search split alone."""
    config = SearchConfig(seed=0, pop=6, iters=10, choose="cv", hof=6)
    clean = evolve(setup, config, tmp_path / "clean")
    corrupt = evolve(shuffled_test_accuracies(setup), config, tmp_path / "corrupt")
    assert clean["hall_of_fame"] == corrupt["hall_of_fame"] and len(clean["hall_of_fame"]) >= 2
    assert clean["formula"] == corrupt["formula"] and clean["search"] == corrupt["search"]
    assert clean["test"]["jcm"] != corrupt["test"]["jcm"]  # the corruption did reach the test part
    chosen = max(clean["hall_of_fame"], key=lambda r: r["cv_score"])
    assert clean["formula"] == chosen["formula"]
    for row in clean["hall_of_fame"]:
        assert row["cv_score"] == pytest.approx(row["fold_mean"] - row["fold_se"])
    # the paper preset answers with the best JCM and reports the cross-validated choice beside
    paper = evolve(setup, SearchConfig(seed=0, pop=6, iters=10, hof=6), tmp_path / "paper")
    assert paper["choice"] == "best" and paper["beside"]["rule"] == "cv"
    assert paper["beside"]["formula"] == chosen["formula"]


def test_split_seed_reuses_the_statistics_cache(setup, cli_common, tmp_path):
    import dataclasses
    before = cache_files(setup.cache.root)
    other = dataclasses.replace(setup, split_seed=3)
    assert other.bench.split("search", 3) != setup.bench.split("search", setup.split_seed)
    result = evolve(other, SearchConfig(seed=0, pop=6, iters=3), tmp_path)
    assert result["finished"] and result["config"]["split_seed"] == 3
    assert result["config"]["stats"]["seed"] == setup.cfg.seed  # the batch is unchanged
    assert cache_files(setup.cache.root) == before  # no new extraction
    # and from the command line: --split-seed is part of the run's identity
    out = tmp_path / "cli"
    evolve_runner.main(cli_common + ["--split-seed", "3", "--pop", "6", "--iters", "2", "--out", str(out)])
    assert read(out / "best.json")["config"]["split_seed"] == 3
    assert cache_files(setup.cache.root) == before


@pytest.mark.parametrize("variant", ["nsga2", "random"])
def test_joblib_map_gives_the_sequential_result(variant, setup, tmp_path):
    """toolbox.map over joblib threads (--jobs 2) evaluates the same batches to the same run."""
    import dataclasses
    config = SearchConfig(seed=0, pop=6, iters=3, **{"nsga2": dict(select="nsga2", cxpb=0.5),
                                                     "random": dict(strategy="random", evals=30)}[variant])
    one = evolve(setup, config, tmp_path / "one")
    two = evolve(dataclasses.replace(setup, n_jobs=2), config, tmp_path / "two")
    assert (tmp_path / "one" / "history.json").read_text() == (tmp_path / "two" / "history.json").read_text()
    assert one["formula"] == two["formula"] and one["hall_of_fame"] == two["hall_of_fame"]
