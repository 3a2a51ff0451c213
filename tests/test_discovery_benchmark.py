"""benchmarks/discovery.py on tiny settings: rows per split and method, random search with the
large budget's evaluations, resumable (finished rows are never redone), and the table."""
import importlib.util
import json
from pathlib import Path

import pytest

from gp.budgets import BUDGETS

ROOT = Path(__file__).resolve().parents[1]


def load_discovery():
    spec = importlib.util.spec_from_file_location("discovery", ROOT / "benchmarks" / "discovery.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_large(monkeypatch):
    monkeypatch.setitem(BUDGETS, "large", {**BUDGETS["large"], "pop": 6, "evals": 30, "hof": 4})


def test_discovery_rows_resume_and_table(tiny_large, session_cache, tiny_cfg, tmp_path, monkeypatch,
                                         capsys):
    discovery = load_discovery()
    argv = ["--spaces", "autoformer", "--splits", "0", "1", "--archs", "12", "--img-size",
            str(tiny_cfg.img_size), "--batch-size", str(tiny_cfg.batch_size), "--datasets", "c100",
            "--cache", str(session_cache.root), "--results", str(tmp_path / "results"),
            "--runs", str(tmp_path / "runs"), "--quiet"]
    monkeypatch.setitem(BUDGETS, "paper", {"iters": 5})
    discovery.main(argv)
    path = tmp_path / "results" / "discovery-autoformer.json"
    rows = json.loads(path.read_text())["rows"]
    methods = ["paper", "large", "random", "ensemble", *discovery.BASELINES]
    assert sorted((r["split_seed"], r["method"]) for r in rows) == sorted(
        (s, m) for s in (0, 1) for m in methods)
    by = {(r["split_seed"], r["method"]): r for r in rows}
    for split in (0, 1):
        assert by[split, "random"]["evaluations"] == by[split, "large"]["evaluations"] >= 30
        assert by[split, "random"]["stopped"] == "evaluations"
        assert by[split, "large"]["stopped"] in ("evaluations", "patience")
        for m in methods:
            r = by[split, m]
            assert -1 <= r["test_jcm"] <= 1 and 0 <= r["test_tied"] <= 1 and 0 <= r["search_tied"] <= 1
    # another split, another search and test part
    assert any((by[0, m]["search_jcm"], by[0, m]["test_jcm"]) != (by[1, m]["search_jcm"], by[1, m]["test_jcm"])
               for m in discovery.BASELINES)
    # rows already written are skipped: nothing is searched again
    before = path.read_text()
    monkeypatch.setattr(discovery, "search_row", lambda *a, **k: pytest.fail("a finished row was redone"))
    discovery.main(argv)
    assert path.read_text() == before
    capsys.readouterr()
    discovery.main(argv + ["--table"])
    out = capsys.readouterr().out
    assert "| large | 2 |" in out and "best baseline (by search JCM)" in out
    assert "large (b) vs random search (c):" in out and "paired wins" in out
    for label in ("large (b)", "random search (c)"):  # the control faces the baselines too
        assert f"{label} vs each split's best baseline: " in out
    for label in ("paper budget (a)", "large (b)", "random search (c)"):  # both final rules
        assert f"{label}, cross-validated choice vs best search JCM of the same run: " in out
    assert ("ensemble (paper budget, --choose ensemble), ensemble of the hall of fame's best vs best "
            "search JCM of the same run: ") in out
    assert by[0, "ensemble"]["formula"] is None and len(by[0, "ensemble"]["members"]) >= 1
    assert "on the 2 split(s) where every search finished (0, 1), mean test JCM: paper " in out
    # --ship: the split-0 large run's answer, never a test-part pick, with the protocol's figures
    discovery.main(argv + ["--ship"])
    shipped = json.loads((tmp_path / "results" / "autoprox-autoformer.json").read_text())
    best = json.loads((tmp_path / "runs" / "autoformer" / "split0" / "large" / "best.json").read_text())
    assert shipped["formula"] == best["formula"] == by[0, "large"]["formula"]
    assert shipped["choice"] == "cv" and shipped["test"] == best["test"]
    protocol = shipped["protocol"]
    assert protocol["splits"] == 2 and protocol["test_jcm"] == {
        str(s): by[s, "large"]["test_jcm"] for s in (0, 1)}
    assert protocol["vs_random"]["splits"] == protocol["vs_best_baseline"]["splits"] == 2


def test_ship_without_a_split0_large_row_is_a_one_line_error(tmp_path, capsys):
    discovery = load_discovery()
    with pytest.raises(SystemExit) as exc:
        discovery.main(["--spaces", "pit", "--results", str(tmp_path), "--ship"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --ship:") and "split seed 0" in err and "\n" not in err


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
