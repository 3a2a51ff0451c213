"""benchmarks/discovery.py on tiny settings: rows per split and method, random search with the
large budget's evaluations, resumable (finished rows are never redone), and the table."""
import importlib
import importlib.util
import json
import re
from pathlib import Path

import pytest

from gp.budgets import BUDGETS

ROOT = Path(__file__).resolve().parents[1]


def load_discovery():
    spec = importlib.util.spec_from_file_location("discovery", ROOT / "benchmarks" / "discovery.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def discovery_module(name: str):
    """benchmarks/discovery_<name>.py, the script's part of that name (once the script is loaded,
    the repository root is on the path)."""
    load_discovery()
    return importlib.import_module(f"benchmarks.discovery_{name}")


BASELINES_HERE = ["params", "nwot"]  # two of the benchmark's baselines: one count, one data-dependent


@pytest.fixture
def tiny_large(monkeypatch):
    monkeypatch.setitem(BUDGETS, "large", {**BUDGETS["large"], "pop": 6, "evals": 30, "hof": 4})


def test_discovery_rows_resume_and_table(tiny_large, session_cache, tiny_cfg, tmp_path, monkeypatch,
                                         capsys):
    discovery = load_discovery()
    argv = ["--spaces", "autoformer", "--archs", "12", "--img-size",
            str(tiny_cfg.img_size), "--batch-size", str(tiny_cfg.batch_size), "--datasets", "c100",
            "--cache", str(session_cache.root), "--results", str(tmp_path / "results"),
            "--runs", str(tmp_path / "runs"), "--quiet", "--baselines", *BASELINES_HERE]
    monkeypatch.setitem(BUDGETS, "paper", {"iters": 5, "pop": 6})
    methods_module = discovery_module("methods")
    monkeypatch.setattr(methods_module, "BAGS", 2)
    def both_splits():  # every method on split 0, two on split 1 (time)
        discovery.main(argv + ["--splits", "0"])
        discovery.main(argv + ["--splits", "1", "--methods", "paper", "baselines"])
    both_splits()
    path = tmp_path / "results" / "discovery-autoformer.json"
    rows = json.loads(path.read_text())["rows"]
    methods = ["paper", "large", "random", "random_paper", "bagged", "ensemble", "ensemble_params",
               "bagged_params", *BASELINES_HERE]
    assert sorted((r["split_seed"], r["method"]) for r in rows) == sorted(
        [(0, m) for m in methods] + [(1, m) for m in ["paper", *BASELINES_HERE]])
    by = {(r["split_seed"], r["method"]): r for r in rows}
    split = 0  # every method ran on split 0
    assert by[split, "random"]["evaluations"] == by[split, "large"]["evaluations"] >= 30
    assert by[split, "random"]["stopped"] == "evaluations"
    assert by[split, "large"]["stopped"] in ("evaluations", "patience")
    assert by[split, "random_paper"]["evaluations"] == by[split, "paper"]["evaluations"]
    # derived rows: the paper run's other rules, the same search
    for m, rule in (("ensemble", "ensemble"), ("ensemble_params", "ensemble+params")):
        assert by[split, m]["choice"] == rule and by[split, m]["derived_from"] == "paper"
        assert by[split, m]["beside_test_jcm"] == by[split, "paper"]["test_jcm"]
        assert by[split, m]["evaluations"] == by[split, "paper"]["evaluations"]
    assert len(by[split, "bagged"]["members"]) == 2
    # each bag stops once its share is spent, at most one iteration's tries past it
    assert by[split, "bagged"]["evaluations"] <= by[split, "paper"]["evaluations"] + methods_module.BAGS * 10
    assert by[split, "bagged_params"]["members"] == by[split, "bagged"]["members"] + ["add(msa_numel, mlp_numel)"]
    for m in methods:
        r = by[split, m]
        assert -1 <= r["test_jcm"] <= 1 and 0 <= r["test_tied"] <= 1 and 0 <= r["search_tied"] <= 1
    for r in rows:
        assert -1 <= r["test_jcm"] <= 1 and 0 <= r["test_tied"] <= 1 and 0 <= r["search_tied"] <= 1
    # another split, another search and test part
    assert any((by[0, m]["search_jcm"], by[0, m]["test_jcm"]) != (by[1, m]["search_jcm"], by[1, m]["test_jcm"])
               for m in BASELINES_HERE)
    # rows already written are skipped: nothing is searched again
    before = path.read_text()
    monkeypatch.setattr(discovery, "search_row", lambda *a, **k: pytest.fail("a finished row was redone"))
    both_splits()
    assert path.read_text() == before
    argv += ["--splits", "0", "1"]
    capsys.readouterr()
    discovery.main(argv + ["--table"])
    out = capsys.readouterr().out
    assert "| large | 1 |" in out and "| paper | 2 |" in out and "best baseline (by search JCM)" in out
    assert "large (b) vs random search (c):" in out and "paired wins" in out
    for label in ("large (b)", "random search (c)"):  # the control faces the baselines too
        assert f"{label} vs each split's best baseline: " in out
    for label in ("large (b)", "random search (c)"):  # both final rules: the answer's first
        assert f"{label}, cross-validated choice vs best search JCM of the same run: " in out
    assert "paper budget (a), best search JCM vs cross-validated choice of the same run: " in out
    assert ("ensemble (paper run, K = 5), ensemble of the hall of fame's best vs best "
            "search JCM of the same run: ") in out
    assert "bagged (5 bags, the paper run's evaluations) vs random search at the paper budget: " in out
    assert by[0, "ensemble"]["formula"] is None and len(by[0, "ensemble"]["members"]) >= 1
    assert "on the 1 split(s) where every search finished (0), mean test JCM: paper " in out
    assert re.search(r"paper budget \(a\) vs each split's best baseline: [0-2]/2 paired wins", out)
    # --ship: the rule picks the method from the rows, which is fitted again on every record
    discovery.main(argv + ["--ship"])
    shipped = json.loads((tmp_path / "results" / "autoprox-autoformer.json").read_text())
    candidates = [m for m in discovery_module("ship").SHIP_CANDIDATES if (0, m) in by]  # split 0: the common one
    means = {m: by[0, m]["test_jcm"] for m in candidates}
    top = max(means.values())
    method = next(m for m in candidates if means[m] == top)  # ties: the earlier candidate
    protocol = shipped["protocol"]
    assert protocol["method"] == method and protocol["candidates"] == pytest.approx(means)
    splits = [s for s in (0, 1) if (s, method) in by]
    assert protocol["splits"] == len(splits) and protocol["common_splits"] == [0]
    assert protocol["test_jcm"] == {str(s): by[s, method]["test_jcm"] for s in splits}
    assert shipped["test"] is None and shipped["search_part"] == "every record (no test part)"
    fit = json.loads((tmp_path / "runs" / "autoformer" / "all" / method / "best.json").read_text())
    assert shipped["search"] == fit["search"] and shipped["config"]["search_part"] == "all"


def test_joint_rows_carry_each_spaces_interval_and_old_rows_get_it(session_cache, tiny_cfg, tmp_path,
                                                                     monkeypatch):
    """A joint run's row in each space's file has that space's own test interval; a row written
    without one (before runs recorded it) gets the same interval from its formula, marked filled."""
    discovery = load_discovery()
    monkeypatch.setitem(BUDGETS, "paper", {"iters": 3, "pop": 6})
    argv = ["--spaces", "autoformer", "pit", "--archs", "12", "--img-size", str(tiny_cfg.img_size),
            "--batch-size", str(tiny_cfg.batch_size), "--datasets", "c100", "--cache",
            str(session_cache.root), "--results", str(tmp_path / "results"), "--runs",
            str(tmp_path / "runs"), "--quiet", "--splits", "0", "--methods", "joint"]
    discovery.main(argv)
    paths = {space: tmp_path / "results" / f"discovery-{space}.json" for space in ("autoformer", "pit")}
    best = json.loads((tmp_path / "runs" / "joint" / "split0" / "joint" / "best.json").read_text())
    recorded = {}
    for space, path in paths.items():
        data = json.loads(path.read_text())
        (row,) = data["rows"]
        assert row["test_interval"] == best["test"]["per_space_interval"][space]
        low, high = row["test_interval"]
        assert low <= row["test_jcm"] <= high
        recorded[space] = row["test_interval"]
        row["test_interval"] = None  # as the rows written before
        path.write_text(json.dumps(data))
    monkeypatch.setattr(discovery, "search_row", lambda *a, **k: pytest.fail("a finished row was redone"))
    discovery.main(argv)
    for space, path in paths.items():
        (row,) = json.loads(path.read_text())["rows"]
        assert row["test_interval"] == pytest.approx(recorded[space], abs=1e-12)
        assert row["test_interval_filled"] is True


def test_ship_without_rows_is_a_one_line_error(tmp_path, capsys):
    discovery = load_discovery()
    with pytest.raises(SystemExit) as exc:
        discovery.main(["--spaces", "pit", "--results", str(tmp_path), "--ship"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --ship: no method has rows") and "\n" not in err


def test_concurrent_appends_keep_every_row(tmp_path):
    """Two benchmark processes on different splits share one results file (append_row locks)."""
    import threading
    discovery = load_discovery()
    path, settings = tmp_path / "discovery-pit.json", {"space": "pit"}

    def writer(worker):
        for i in range(10):
            discovery.append_row(path, settings, {"split_seed": worker, "method": f"m{i}"})
    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    rows = json.loads(path.read_text())["rows"]
    assert sorted((r["split_seed"], r["method"]) for r in rows) == sorted(
        (w, f"m{i}") for w in range(6) for i in range(10))


def test_the_summary_table_is_each_methods_mean_over_its_splits_beside_the_ceiling():
    from types import SimpleNamespace
    rows = {"autoformer": [{"split_seed": s, "method": "paper", "test_jcm": v, "search_jcm": 0.5}
                           for s, v in ((0, 0.50), (1, 0.60))],
            "pit": [{"split_seed": 0, "method": "paper", "test_jcm": 0.80, "search_jcm": 0.7}]}
    ceilings = {"autoformer": {0: SimpleNamespace(value=0.625), 1: SimpleNamespace(value=0.75)},
                "pit": {0: SimpleNamespace(value=0.80)}}
    text = discovery_module("tables").summary_table({space: (rows[space], ceilings[space]) for space in rows})
    assert "| paper budget (a) | 0.550 ± 0.071 [2] | 0.800 | 0.800 ± 0.000 [1] | 1.000 |" in text
    assert "| ceiling of the test parts | 0.688 ± 0.088 [2] | 1.000 | 0.800 ± 0.000 [1] | 1.000 |" in text


def test_the_shipping_rule_averages_over_common_splits_and_spaces():
    ship = discovery_module("ship")

    def rows(values):
        return [{"split_seed": s, "method": m, "test_jcm": v} for (m, s), v in values.items()]
    rows_of = {"autoformer": rows({("paper", 0): 0.50, ("paper", 1): 0.60, ("bagged", 0): 0.58,
                                   ("bagged", 1): 0.56, ("joint", 0): 0.9}),
               "pit": rows({("paper", 0): 0.80, ("paper", 1): 0.80, ("bagged", 0): 0.79,
                            ("bagged", 1): 0.79, ("bagged", 2): 0.10})}
    method, means, common = ship.shipped_method(rows_of)  # joint: no PiT row, not a candidate
    assert common == [0, 1] and set(means) == {"paper", "bagged"}
    assert means["paper"] == pytest.approx(0.675) and means["bagged"] == pytest.approx(0.68)
    assert method == "bagged"
    rows_of["autoformer"][-2]["test_jcm"] = 0.54  # bagged 0.58, 0.54 -> mean 0.675: a tie
    assert ship.shipped_method(rows_of)[0] == "paper"  # ties go to the earlier candidate


def test_budgets_of_a_split_are_its_own_and_of_the_fit_the_splits_mean():
    methods = discovery_module("methods")
    rows = [{"split_seed": s, "method": m, "evaluations": e}
            for (m, s), e in {("paper", 0): 440, ("paper", 1): 461, ("large", 0): 1500, ("large", 1): 1200}.items()]
    for method, by_split, fit in (("random_paper", {0: 440, 1: 461}, 450), ("random", {0: 1500, 1: 1200}, 1350),
                                  ("bagged", {0: 440 // 5, 1: 461 // 5}, 450 // 5)):
        for split, evals in by_split.items():
            config = methods.method_config(method, split, rows)
            assert (config.evals, config.seed) == (evals, split), method
        config = methods.method_config(method, None, rows)
        assert (config.evals, config.seed) == (fit, 0), method
    assert methods.method_config("random_paper", 2, rows).evals == 450  # no paper row: the default
