"""What a new user runs into (issue 13): close proxy names, nothing created before input is
checked, result files that follow the umask, one folder per evolve run, defaults in --help, and
progress bars that say which split they extract."""
import contextlib
import io
import json
import os
import stat
from pathlib import Path

import joblib
import pytest
import torch
from PIL import Image

from runners import evolve, extract, rank, search, train
from vit_space.core.atomic import atomic_dump, torch_save_atomic, write_json_atomic
from vit_space.core.errors import BadInput
from vit_space.core.outputs import check_writable_dir, run_dir
from vit_space.data.bench import find_bench, load_bench
from vit_space.scoring.proxies import resolve_proxy
from vit_space.stats.cache import StatsCache
from vit_space.stats.parallel import fill_cache

MAINS = {"rank": rank.main, "evolve": evolve.main, "extract": extract.main, "search": search.main,
         "train": train.main}
RUN_FILES = evolve.RUN_FILES


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("VIT_BENCH_101", raising=False)
    monkeypatch.delenv("AUTOPROX_CACHE", raising=False)


@pytest.fixture
def umask_022():
    before = os.umask(0o022)
    yield
    os.umask(before)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def error_line(runner, argv, capsys) -> str:
    """The one stderr line of a runner refusing its input with exit status 2."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        MAINS[runner](argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert info.value.code == 2 and len(lines) == 1 and out == "", (info.value.code, out, err)
    return lines[0]


def tiny_flags(cache) -> list:
    return ["--archs", "8", "--img-size", "32", "--batch-size", "4", "--seed", "0", "--datasets",
            "c100", "--device", "cpu", "--backend", "sequential", "--cache", str(cache), "--quiet"]


# ---------------------------------------------------------------------------- item 2: close names

@pytest.mark.parametrize("text,first", [
    ("autoprox-autofromer", "autoprox-autoformer"),  # holds '-': once parsed as a formula
    ("snipp", "snip"),
    ("gradnorm", "grad_norm"),
    ("autoprox autoformer", "autoprox-autoformer"),  # not name-like: the formula route
])
def test_a_misspelt_proxy_name_lists_the_closest_names_first(text, first):
    with pytest.raises(BadInput) as info:
        resolve_proxy(text)
    assert str(info.value).startswith(f"--proxy {text}: unknown proxy name (expected one of {first}, "), info.value
    assert str(info.value).endswith(", or a formula)")


def test_far_names_and_real_formulas_are_unchanged():
    with pytest.raises(BadInput, match=r"^--proxy nope: unknown proxy name \(expected one of params, flops,"):
        resolve_proxy("nope")
    assert resolve_proxy("mean_abs(msa_g)").kind == "formula"
    assert resolve_proxy("msa_numel").kind == "formula"
    assert resolve_proxy("autoprox-autoformer").kind == "discovered"
    with pytest.raises(BadInput, match="formula: expected a name"):
        resolve_proxy("add(msa_numel,")


def test_the_runner_prints_the_close_name_line(tmp_path, capsys):
    line = error_line("rank", tiny_flags(tmp_path / "cache") + ["--proxy", "autoprox-autofromer"], capsys)
    assert line.startswith("error: --proxy autoprox-autofromer: unknown proxy name (expected one of "
                           "autoprox-autoformer, "), line


# ---------------------------------------------------------------------------- item 3: nothing created

def test_check_writable_dir_creates_nothing(tmp_path):
    deep = tmp_path / "a" / "b" / "c"
    assert check_writable_dir(deep, "--out") == deep
    assert list(tmp_path.iterdir()) == []
    plain = tmp_path / "plain"
    plain.write_text("x")
    with pytest.raises(BadInput, match=r"cannot create directory \(Not a directory\)$"):
        check_writable_dir(plain / "run", "--out")
    with pytest.raises(BadInput, match=r"cannot create directory \(File exists\)$"):
        check_writable_dir(plain, "--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]


@pytest.mark.parametrize("runner,bad", [
    ("evolve", ["--bench", "/no/such/path"]),
    ("evolve", ["--space", "vit"]),
    ("evolve", ["--img-size", "20"]),
    ("rank", ["--bench", "/no/such/path"]),
    ("rank", ["--space", "vit"]),
    ("search", ["--bench", "/no/such/path"]),
    ("search", ["--space", "vit"]),
    ("extract", ["--bench", "/no/such/path"]),
])
def test_bad_input_creates_no_folder(runner, bad, tmp_path, capsys):
    extra = {"evolve": ["--out", str(tmp_path / "out" / "run")],
             "rank": ["--proxy", "params", "--json", str(tmp_path / "out" / "r.json"),
                      "--plot", str(tmp_path / "plots")],
             "search": ["--proxy", "params", "--max-params", "6e6", "--json", str(tmp_path / "out" / "s.json")],
             "extract": []}[runner]
    error_line(runner, tiny_flags(tmp_path / "cache") + extra + bad, capsys)
    assert list(tmp_path.iterdir()) == [], list(tmp_path.rglob("*"))


def test_train_resume_without_checkpoint_creates_no_folder(tmp_path, capsys):
    root = tmp_path / "chaoyang"  # a valid Chaoyang root: one 8 px image per class and split
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
        for c in range(4):
            Image.new("RGB", (8, 8), (60 * c, 40, 0)).save(root / split / f"{c}.png")
        (root / f"{split}.json").write_text(json.dumps([{"name": f"{split}/{c}.png", "label": c} for c in range(4)]))
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"hidden_dim": 192, "depth": 12, "mlp_ratio": [3.5] * 12, "num_heads": [3] * 12}))
    out = tmp_path / "runs" / "t"
    line = error_line("train", ["--arch", str(arch), "--dataset", "chaoyang", "--data-root", str(root),
                                "--out", str(out), "--img-size", "16", "--device", "cpu", "--quiet",
                                "--resume"], capsys)
    assert line == f"error: --resume: no checkpoint at {out / 'checkpoint.pt'}"
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------- item 4: file modes

def test_atomic_writers_follow_the_umask(tmp_path):
    before = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": 1})
        atomic_dump({"x": 1}, tmp_path / "b.joblib")
        torch_save_atomic({"x": 1}, tmp_path / "c.pt")
        assert {p.name: mode(p) for p in tmp_path.iterdir()} == \
            {"a.json": 0o644, "b.joblib": 0o644, "c.pt": 0o644}
        os.umask(0o027)
        write_json_atomic(tmp_path / "a.json", {"x": 2})  # replacing takes the new mode too
        assert mode(tmp_path / "a.json") == 0o640
        assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}
        assert joblib.load(tmp_path / "b.joblib") == {"x": 1}
        assert torch.load(tmp_path / "c.pt") == {"x": 1}
    finally:
        os.umask(before)


def test_cache_entries_and_rank_json_are_0644(tmp_path, umask_022, capsys):
    report = tmp_path / "report.json"
    argv = tiny_flags(tmp_path / "cache") + ["--archs", "4", "--proxy", "mean_abs(msa_g)",
                                              "--split", "all", "--json", str(report)]
    assert rank.main(argv) is None
    entries = list((tmp_path / "cache").rglob("*.joblib"))
    assert len(entries) == 4 and {mode(p) for p in entries} == {0o644}
    assert mode(report) == 0o644


# ---------------------------------------------------------------------------- item 6: run folders

def test_run_dir_series(tmp_path):
    base = str(tmp_path / "runs" / "evolve")
    assert run_dir(None, base, RUN_FILES) == Path(base)
    Path(base).mkdir(parents=True)
    assert run_dir(None, base, RUN_FILES) == Path(base)  # an empty folder holds no run
    (Path(base) / "best.json").write_text("{}")
    assert run_dir(None, base, RUN_FILES) == Path(f"{base}-2")
    assert run_dir(None, base, RUN_FILES, resume=True) == Path(base)
    Path(f"{base}-3").mkdir()
    (Path(f"{base}-3") / "checkpoint.json").write_text("{}")
    assert run_dir(None, base, RUN_FILES) == Path(f"{base}-4")  # after the newest, not a gap
    assert run_dir(None, base, RUN_FILES, resume=True) == Path(f"{base}-3")
    with pytest.raises(BadInput, match=r"holds another run \(best.json\); pass --resume"):
        run_dir(base, base, RUN_FILES)
    assert run_dir(base, base, RUN_FILES, resume=True) == Path(base)
    assert run_dir(base, base, RUN_FILES, force=True) == Path(base)
    assert not Path(f"{base}-2").exists() and not Path(f"{base}-4").exists()


@pytest.fixture(scope="module")
def two_default_runs(session_cache, tmp_path_factory):
    """Two tiny searches (4 x 2) without --out, from one working directory: their stdout and
    the working directory."""
    cwd = tmp_path_factory.mktemp("cwd")
    here, mask = os.getcwd(), os.umask(0o022)
    outs = []
    try:
        os.chdir(cwd)
        argv = tiny_flags(session_cache.root) + ["--archs", "12", "--pop", "4", "--iters", "2"]
        for _ in range(2):
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer):
                assert evolve.main(argv) is None
            outs.append(buffer.getvalue())
    finally:
        os.chdir(here)
        os.umask(mask)
    return outs, cwd, argv


def test_each_default_run_gets_a_fresh_folder(two_default_runs):
    outs, cwd, _ = two_default_runs
    assert outs[0].splitlines()[0] == f"output: {Path('runs') / 'evolve'}"
    assert outs[1].splitlines()[0] == f"output: {Path('runs') / 'evolve-2'}"
    for folder in ("evolve", "evolve-2"):
        assert (cwd / "runs" / folder / "best.json").is_file()
    assert sorted(p.name for p in (cwd / "runs").iterdir()) == ["evolve", "evolve-2"]


def test_resume_without_out_continues_the_newest_run(two_default_runs, monkeypatch, capsys):
    _, cwd, argv = two_default_runs
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    assert evolve.main(argv + ["--resume"]) is None
    assert capsys.readouterr().out.splitlines()[0] == f"resuming: {Path('runs') / 'evolve-2'}"
    assert sorted(p.name for p in (cwd / "runs").iterdir()) == ["evolve", "evolve-2"]


def test_result_files_are_0644_under_umask_022(two_default_runs):
    _, cwd, _ = two_default_runs
    folder = cwd / "runs" / "evolve"
    written = {p.name: mode(p) for p in folder.iterdir()}
    assert {"best.json", "history.json", "checkpoint.json", "jcm.png"} <= set(written)
    assert written == {name: 0o644 for name in written}


def test_an_explicit_used_out_is_refused_unless_resume_or_force(two_default_runs, capsys):
    _, cwd, argv = two_default_runs
    used = cwd / "runs" / "evolve"
    before = {p.name: p.read_bytes() for p in used.iterdir()}
    line = error_line("evolve", argv + ["--out", str(used)], capsys)
    held = ", ".join(n for n in RUN_FILES if (used / n).exists())
    assert "best.json" in held and "checkpoint.json" in held
    assert line == (f"error: --out {used}: holds another run ({held}); pass --resume to continue it "
                    "or --force to overwrite it, or use a new --out")
    assert {p.name: p.read_bytes() for p in used.iterdir()} == before
    # --resume of a finished run rewrites the same results; --force starts over into it
    assert evolve.main(argv + ["--out", str(used), "--resume"]) is None
    assert evolve.main(argv + ["--out", str(used), "--force"]) is None
    again, first = json.loads((used / "best.json").read_bytes()), json.loads(before["best.json"])
    assert (again["formula"], again["search"], again["test"]) == (first["formula"], first["search"], first["test"])


# ---------------------------------------------------------------------------- item 7: --help

@pytest.mark.parametrize("runner,shown", [
    ("evolve", ["--batch-size BATCH_SIZE (default: 16)", "--img-size IMG_SIZE (default: 224)",
                "(default: autoformer)", "(default: loky)", "(default: sum)"]),
    ("rank", ["(default: all)", "(default: test)", "(default: sum)"]),
    ("search", ["(default: random)", "(default: 1000)"]),
    ("extract", ["(default: c100,flowers,chaoyang)", "--rows ROWS", "(default: 32)"]),
    ("train", ["--seed SEED (default: 0)", "(default: autoformer)", "(default: auto)"]),
])
def test_help_shows_defaults(runner, shown, capsys):
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        MAINS[runner](["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for needle in shown:
        assert " ".join(needle.split()) in text, (needle, text)
    assert "(default: None)" not in text and "(default: False)" not in text


# ---------------------------------------------------------------------------- item 9: bar labels

def test_cold_extraction_bar_names_its_split(tiny_cfg, tmp_path, capsys):
    bench = load_bench(find_bench("autoformer"), "autoformer")
    items = [("autoformer", bench.records[0]["arch"], "c100")]
    capsys.readouterr()
    assert fill_cache(StatsCache(tmp_path), items, tiny_cfg, 1, "sequential", label="search split") == 1
    assert "statistics (search split)" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the presets in --help

def test_evolve_help_shows_each_budgets_values(capsys):
    """A newcomer sees the default run's P = 20 and T = 200 (and the large preset's) in --help."""
    from runners import evolve
    with pytest.raises(SystemExit) as exit_:
        evolve.main(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "population P (default from --budget: paper: 20, large: 50)" in text
    assert "iterations T (default from --budget: paper: 200, large: 1000000)" in text
    assert "(default: from --budget)" not in text
