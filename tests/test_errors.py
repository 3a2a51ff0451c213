"""One error style for every runner: bad input exits with status 2 and exactly one non-empty line
on stderr, `error: ...`, naming the file / flag / record / field at fault; nothing is printed on
stdout and nothing is written (no --json / --out file, no cache entry) before the error.

Every case runs the runner's main(argv) in process (SystemExit caught, stderr from capsys), with a
fresh --cache inside tmp_path, and compares a snapshot of every file under tmp_path before and
after, so a runner that did work (extraction, scoring, a checkpoint) before failing is caught.
A few cases also run as real processes (`python runners/<x>.py ...`) and must print the very same
line. The table of cases and the messages seen is docs/reliability.md.
"""
import copy
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest
import torch
from PIL import Image

from runners import evolve, extract, rank, search, train
from vit_space.core.errors import BadInput
from vit_space.data.bench import find_bench, load_bench

ROOT = Path(__file__).resolve().parents[1]
MAINS = {"rank": rank.main, "evolve": evolve.main, "extract": extract.main, "search": search.main,
         "train": train.main}
STATS_RUNNERS = ("rank", "evolve", "extract", "search")
# the smallest AutoFormer arch, for the trainer
ARCH = {"hidden_dim": 192, "depth": 12, "mlp_ratio": [3.5] * 12, "num_heads": [3] * 12}
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("VIT_BENCH_101", raising=False)
    monkeypatch.delenv("AUTOPROX_CACHE", raising=False)


# ---------------------------------------------------------------------------- inputs

def _write(path: Path, data) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _write_chaoyang(root: Path) -> Path:
    """A valid Chaoyang root: one 8 px PNG per class and split."""
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
        entries = []
        for c in range(4):
            name = f"{split}/{c}.png"
            Image.new("RGB", (8, 8), (60 * c, 40, 200 - 40 * c)).save(root / name)
            entries.append({"name": name, "label": c})
        _write(root / f"{split}.json", entries)
    return root


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Read-only inputs shared by every case (outside each test's tmp_path)."""
    d = tmp_path_factory.mktemp("inputs")
    records = json.loads(find_bench("autoformer").read_text())[:12]
    no_depth = copy.deepcopy(records)
    del no_depth[2]["arch"]["depth"]
    short = copy.deepcopy(records)
    short[1]["arch"]["mlp_ratio"] = short[1]["arch"]["mlp_ratio"][:-1]
    outside = copy.deepcopy(records)
    outside[2]["arch"]["hidden_dim"] = 256
    null_all = copy.deepcopy(records)
    for r in null_all:
        r["c100_kd_acc"] = None
    # only the test split of the first 8 records has no c100 accuracy: the search split is fine,
    # so a runner that checks late would finish a whole search first
    test_split = load_bench(find_bench("autoformer"), "autoformer").head(8).split("test", 0)
    null_test = copy.deepcopy(records)
    for i in test_split:
        null_test[i]["c100_kd_acc"] = None
    ns = SimpleNamespace(
        dir=d,
        garbled=_write(d / "autoformer_garbled.json", '[{"arch": {"hidden_dim": 192,'),
        top_dict=_write(d / "autoformer_dict.json", {"records": records}),
        no_depth=_write(d / "autoformer_no_depth.json", no_depth),
        short=_write(d / "autoformer_short.json", short),
        outside=_write(d / "autoformer_outside.json", outside),
        null_all=_write(d / "autoformer_null_c100.json", null_all),
        null_test=_write(d / "autoformer_null_test.json", null_test),
        plain_file=_write(d / "plain_file", "not a directory"),
        empty=d / "empty",
        layout=d / "layout",
        chaoyang=_write_chaoyang(d / "chaoyang"),
        arch=_write(d / "arch.json", {"arch": ARCH}),
        arch_garbled=_write(d / "arch_garbled.json", "{'arch': nope"),
        arch_outside=_write(d / "arch_outside.json", {**ARCH, "hidden_dim": 100}),
        arch_short=_write(d / "arch_short.json", {"arch": {**ARCH, "num_heads": [3] * 11}}),
        search_json=_write(d / "search.json", {"space": "autoformer", "top": [{"arch": ARCH, "score": 1.0}]}),
    )
    ns.empty.mkdir()
    (ns.layout / "c100").mkdir(parents=True)  # the data set's dir, without its files
    return ns


def accuracies_message(bench_path: Path, split: str = "test") -> str:
    """What vit_space.data.bench.Bench.accuracies says about c100_kd_acc on the runners' split."""
    bench = load_bench(bench_path, "autoformer").head(8)
    with pytest.raises(BadInput) as info:
        bench.accuracies(bench.split(split, 0), "c100_kd_acc")
    return f"error: {info.value}"


# ---------------------------------------------------------------------------- the harness

def data_flags(cache) -> list:
    return ["--archs", "8", "--img-size", "32", "--batch-size", "2", "--datasets", "c100",
            "--device", "cpu", "--backend", "sequential", "--cache", str(cache), "--quiet"]


def runner_argv(runner: str, c) -> list:
    """A valid command line of `runner` whose outputs all lie in c.tmp; a case appends the
    flags that make it bad (argparse keeps the last value of a repeated flag)."""
    if runner == "train":
        return ["--arch", str(c.inp.arch), "--dataset", "chaoyang", "--data-root", str(c.inp.chaoyang),
                "--out", str(c.tmp / "train_out"), "--epochs", "1", "--batch-size", "2",
                "--img-size", "16", "--device", "cpu", "--quiet"]
    extra = {"rank": ["--proxy", "mean_abs(msa_g)", "--json", str(c.json)],
             "evolve": ["--pop", "4", "--iters", "2", "--out", str(c.tmp / "run")],
             "extract": [],
             "search": ["--proxy", "params", "--max-params", "6e6", "--samples", "4",
                        "--json", str(c.tmp / "search.json")]}[runner]
    return data_flags(c.tmp / "cache") + extra


def snapshot(root: Path) -> dict:
    """Every file's hash and every directory (an empty --out folder counts as written)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def run_in_process(runner: str, argv: list, capsys) -> tuple:
    """(exit status, stdout, stderr) of runners/<runner>.py's main(argv)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:  # a normal return or a traceback fails the test
        MAINS[runner](argv)
    out, err = capsys.readouterr()
    return info.value.code, out, err


def one_error_line(code, out, err) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and len(lines[0]) > len("error: "), err
    assert out == "", out
    return lines[0]


@dataclass
class Case:
    id: str
    runner: str
    bad: Callable  # ctx -> flags appended to the runner's valid command line
    needles: Callable  # ctx -> strings the error line must contain
    marks: tuple = ()


def _data_cases():
    """Bad data options: every runner that reads the bench and the statistics settings."""
    table = [
        ("bench-missing", lambda c: ["--bench", str(c.tmp / "nope.json")],
         lambda c: [f"--bench {c.tmp / 'nope.json'}", "no autoformer.json"]),
        ("bench-not-json", lambda c: ["--bench", str(c.inp.garbled)],
         lambda c: [str(c.inp.garbled), "not JSON"]),
        ("bench-top-level-dict", lambda c: ["--bench", str(c.inp.top_dict)],
         lambda c: [str(c.inp.top_dict), "expected a non-empty list of records, got dict"]),
        ("record-missing-field", lambda c: ["--bench", str(c.inp.no_depth)],
         lambda c: ["autoformer_no_depth.json record 2 field arch: missing field 'depth'"]),
        ("wrong-list-length", lambda c: ["--bench", str(c.inp.short)],
         lambda c: ["autoformer_short.json record 1 field arch.mlp_ratio: expected a list of length depth="]),
        ("value-outside-space", lambda c: ["--bench", str(c.inp.outside)],
         lambda c: ["autoformer_outside.json record 2 field arch.hidden_dim: 256 is outside the space"]),
        ("unknown-space", lambda c: ["--space", "nope"],
         lambda c: ["--space nope: unknown space"]),
        ("unknown-dataset", lambda c: ["--datasets", "c100,mnist"],
         lambda c: ["--datasets mnist: unknown data set"]),
        ("data-root-missing", lambda c: ["--data-root", str(c.tmp / "nowhere")],
         lambda c: [f"--data-root {c.tmp / 'nowhere'}: directory not found"]),
        ("data-root-empty-dir", lambda c: ["--data-root", str(c.inp.empty)],
         lambda c: [f"--data-root {c.inp.empty / 'c100'}: directory not found"]),
        ("data-root-wrong-layout", lambda c: ["--data-root", str(c.inp.layout)],
         lambda c: ["--data-root", "no cifar-100-python/train", "CIFAR-100"]),
        ("archs-3", lambda c: ["--archs", "3"], lambda c: ["--archs 3: expected 4 to"]),
        ("batch-size-0", lambda c: ["--batch-size", "0"],
         lambda c: ["--batch-size 0: expected an integer >= 1"]),
        ("img-size-20", lambda c: ["--img-size", "20"],
         lambda c: ["--img-size 20: expected a multiple of 16"]),
        ("device-cuda", lambda c: ["--device", "cuda"],
         lambda c: ["--device cuda: CUDA is not available"], (NO_CUDA,)),
    ]
    cases = [Case(f"{runner}-{name}", runner, bad, needles, marks)
             for runner in STATS_RUNNERS for name, bad, needles, *more in table
             for marks in [tuple(more[0]) if more else ()]]
    # runners that extract through joblib (search scores archs one by one, in process)
    for runner in ("rank", "evolve", "extract"):
        cases.append(Case(f"{runner}-scheduler-malformed", runner,
                          lambda c: ["--backend", "dask", "--scheduler", "nope-address", "--jobs", "2"],
                          lambda c: ["--scheduler nope-address: cannot connect"]))
    return cases


CASES = _data_cases() + [
    # ---- rank.py
    Case("rank-unknown-proxy", "rank", lambda c: ["--proxy", "nope"],
         lambda c: ["--proxy nope: unknown proxy name (expected one of params,"]),
    Case("rank-malformed-formula", "rank", lambda c: ["--proxy", "add(msa_numel,"],
         lambda c: ["--proxy: formula: expected a name, found 'end of text'"]),
    Case("rank-type-mismatch", "rank", lambda c: ["--proxy", "mul(msa_w, mlp_w)"],
         lambda c: ["--proxy: formula: mul(MsaWeight, MlpWeight) does not type-check"]),
    Case("rank-column-all-none-tree", "rank", lambda c: ["--bench", str(c.inp.null_all)],
         lambda c: [accuracies_message(c.inp.null_all)]),
    # a direct baseline used to be scored (and cached) before the accuracies were checked
    Case("rank-column-all-none-baseline", "rank",
         lambda c: ["--bench", str(c.inp.null_all), "--proxy", "grad_norm"],
         lambda c: [accuracies_message(c.inp.null_all)]),
    Case("rank-scores-bad-extension", "rank", lambda c: ["--scores", str(c.tmp / "scores.txt")],
         lambda c: [f"--scores {c.tmp / 'scores.txt'}: expected a file ending in .csv or .json"]),
    Case("rank-json-under-a-file", "rank", lambda c: ["--json", str(c.inp.plain_file / "r.json")],
         lambda c: [f"--json {c.inp.plain_file}: cannot create directory"]),
    Case("rank-json-is-a-directory", "rank", lambda c: ["--json", str(c.tmp), "--proxy", "params"],
         lambda c: [f"--json {c.tmp}: is a directory"]),
    Case("rank-plot-under-a-file", "rank", lambda c: ["--plot", str(c.inp.plain_file / "plots")],
         lambda c: [f"--plot {c.inp.plain_file / 'plots'}: cannot create directory"]),
    Case("rank-bad-split", "rank", lambda c: ["--split", "train"],
         lambda c: ["--split train: expected one of val, search, test, all"]),
    # ---- evolve.py
    Case("evolve-pop-1", "evolve", lambda c: ["--pop", "1"], lambda c: ["--pop 1: expected an integer >= 2"]),
    Case("evolve-p-node-2", "evolve", lambda c: ["--p-node", "2"], lambda c: ["--p-node 2.0: expected in [0, 1]"]),
    Case("evolve-out-under-a-file", "evolve", lambda c: ["--out", str(c.inp.plain_file / "run")],
         lambda c: [f"--out {c.inp.plain_file / 'run'}: cannot create directory"]),
    Case("evolve-column-all-none", "evolve", lambda c: ["--bench", str(c.inp.null_all)],
         lambda c: [accuracies_message(c.inp.null_all)]),
    # the test split is scored only after the search: it used to fail after a whole search
    Case("evolve-test-split-without-accuracies", "evolve", lambda c: ["--bench", str(c.inp.null_test)],
         lambda c: [accuracies_message(c.inp.null_test)]),
    Case("evolve-resume-without-checkpoint", "evolve", lambda c: ["--resume"],
         lambda c: [f"--resume: no checkpoint at {c.tmp / 'run' / 'checkpoint.json'}"]),
    # ---- search.py
    Case("search-unsatisfiable-max-params", "search", lambda c: ["--max-params", "1e5"],
         lambda c: ["--max-params 100000: no architecture of the autoformer space fits (smallest has"]),
    Case("search-max-params-negative", "search", lambda c: ["--max-params", "-1"],
         lambda c: ["--max-params -1: expected a positive number"]),
    Case("search-pop-1", "search", lambda c: ["--pop", "1"], lambda c: ["--pop 1"]),
    Case("search-unknown-proxy", "search", lambda c: ["--proxy", "nope"], lambda c: ["--proxy nope"]),
    Case("search-type-mismatch", "search", lambda c: ["--proxy", "add(msa_w, mlp_numel)"],
         lambda c: ["--proxy: formula: add(MsaWeight, Scalar) does not type-check"]),
    Case("search-json-under-a-file", "search", lambda c: ["--json", str(c.inp.plain_file / "s.json")],
         lambda c: [f"--json {c.inp.plain_file}: cannot create directory"]),
    Case("search-json-is-a-directory", "search", lambda c: ["--json", str(c.tmp)],
         lambda c: [f"--json {c.tmp}: is a directory"]),
    # --within-bench used to run the whole search (and print its table) before this check
    Case("search-within-bench-column-all-none", "search",
         lambda c: ["--bench", str(c.inp.null_all), "--within-bench"],
         lambda c: [accuracies_message(c.inp.null_all)]),
    # ---- train.py
    Case("train-arch-missing", "train", lambda c: ["--arch", str(c.tmp / "nope.json")],
         lambda c: [f"--arch {c.tmp / 'nope.json'}: file not found"]),
    Case("train-arch-not-json", "train", lambda c: ["--arch", str(c.inp.arch_garbled)],
         lambda c: [f"--arch {c.inp.arch_garbled}: not a readable JSON file"]),
    Case("train-arch-outside-space", "train", lambda c: ["--arch", str(c.inp.arch_outside)],
         lambda c: [f"--arch {c.inp.arch_outside}: arch.hidden_dim: 100 is outside the space"]),
    Case("train-arch-wrong-list-length", "train", lambda c: ["--arch", str(c.inp.arch_short)],
         lambda c: [f"--arch {c.inp.arch_short}: arch.num_heads: expected a list of length depth=12"]),
    Case("train-unknown-space", "train", lambda c: ["--space", "nope"], lambda c: ["--space nope"]),
    Case("train-unknown-dataset", "train", lambda c: ["--dataset", "mnist"],
         lambda c: ["--dataset 'mnist': unknown"]),
    Case("train-data-root-missing", "train", lambda c: ["--data-root", str(c.tmp / "nowhere")],
         lambda c: [f"--data-root {c.tmp / 'nowhere'}: directory not found"]),
    Case("train-data-root-empty-dir", "train", lambda c: ["--data-root", str(c.inp.empty)],
         lambda c: [f"--data-root {c.inp.empty}: no train.json (expected Chaoyang"]),
    Case("train-out-under-a-file", "train", lambda c: ["--out", str(c.inp.plain_file / "o")],
         lambda c: [f"--out {c.inp.plain_file / 'o'}: cannot create directory (Not a directory)"]),
    Case("train-out-is-a-file", "train", lambda c: ["--out", str(c.inp.plain_file)],
         lambda c: [f"--out {c.inp.plain_file}: cannot create directory (File exists)"]),
    Case("train-batch-size-0", "train", lambda c: ["--batch-size", "0"],
         lambda c: ["batch_size 0: expected an integer >= 1"]),
    Case("train-img-size-20", "train", lambda c: ["--img-size", "20"],
         lambda c: ["--img-size 20: expected a multiple of 16"]),
    Case("train-img-size-8", "train", lambda c: ["--img-size", "8"],
         lambda c: ["--img-size 8: expected a multiple of 16"]),
    Case("train-device-cuda", "train", lambda c: ["--device", "cuda"],
         lambda c: ["--device cuda: CUDA is not available"], (NO_CUDA,)),
    Case("train-resume-without-checkpoint", "train", lambda c: ["--resume"],
         lambda c: [f"--resume: no checkpoint at {c.tmp / 'train_out' / 'checkpoint.pt'}"]),
    Case("train-unknown-recipe", "train", lambda c: ["--recipe", "fast"],
         lambda c: ["--recipe 'fast': unknown (expected one of bench, deit, minimal)"]),
    Case("train-search-json-rank-out-of-range", "train",
         lambda c: ["--arch", str(c.inp.search_json), "--rank", "2"],
         lambda c: [f"--rank 2: expected an integer in 1..1 (the archs in {c.inp.search_json})"]),
    Case("train-mixup-odd-batch", "train", lambda c: ["--mixup", "0.8", "--batch-size", "3"],
         lambda c: ["batch_size 3: mixup/cutmix mix a batch with its mirror; expected an even batch size"]),
    Case("train-distill-without-teacher", "train", lambda c: ["--distill", "inter"],
         lambda c: ["--distill and --teacher go together"]),
    Case("train-resnet56-with-arch", "train", lambda c: ["--model", "resnet56"],
         lambda c: ["--arch: the resnet56 teacher has no arch (leave --arch out)"]),
]


@pytest.fixture
def ctx(tmp_path, inputs):
    json_path = tmp_path / "report.json"
    json_path.write_text('{"sentinel": "an earlier report, to be left as it is"}')
    return SimpleNamespace(tmp=tmp_path, inp=inputs, json=json_path)


def check_case(case: Case, c, capsys) -> str:
    argv = runner_argv(case.runner, c) + case.bad(c)
    before = snapshot(c.tmp)
    line = one_error_line(*run_in_process(case.runner, argv, capsys))
    for needle in case.needles(c):
        assert needle in line, (needle, line)
    assert snapshot(c.tmp) == before, "files were written or changed before the error"
    return line


@pytest.mark.parametrize("case", [pytest.param(k, id=k.id, marks=k.marks) for k in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, ctx, capsys):
    check_case(case, ctx, capsys)


def test_every_runner_and_case_kind_is_covered():
    assert {k.runner for k in CASES} == set(MAINS)
    ids = {k.id for k in CASES}
    assert len(ids) == len(CASES)
    for runner in STATS_RUNNERS:
        assert {f"{runner}-bench-missing", f"{runner}-value-outside-space", f"{runner}-img-size-20"} <= ids


def test_valid_command_lines_of_the_harness_succeed(ctx, capsys):
    """The cases are bad only by the flags they add: the base command lines work (rank and
    extract here, on 4 archs: 4 tiny extractions)."""
    for runner in ("extract", "rank"):
        argv = runner_argv(runner, ctx) + (["--split", "all"] if runner == "rank" else [])
        argv[argv.index("--archs") + 1] = "4"
        capsys.readouterr()
        assert MAINS[runner](argv) is None
        out, err = capsys.readouterr()
        assert out.strip(), runner
    report = json.loads(ctx.json.read_text())
    assert report["proxies"]["mean_abs(msa_g)"]["datasets"]["c100_kd_acc"] is not None


# ---------------------------------------------------------------------------- --resume

@pytest.fixture(scope="module")
def evolve_run(session_cache, tiny_cfg, tmp_path_factory):
    """A finished tiny search (4 x 2) with the session cache; its argv and its output dir."""
    out = tmp_path_factory.mktemp("evolve_run") / "run"
    argv = ["--archs", "8", "--img-size", str(tiny_cfg.img_size), "--batch-size", str(tiny_cfg.batch_size),
            "--seed", str(tiny_cfg.seed), "--datasets", "c100", "--device", "cpu",
            "--backend", "sequential", "--cache", str(session_cache.root), "--quiet",
            "--pop", "4", "--iters", "2", "--checkpoint-every", "1"]
    assert evolve.main(argv + ["--out", str(out)]) is None
    assert (out / "checkpoint.json").is_file() and (out / "best.json").is_file()
    return argv, out


@pytest.mark.parametrize("flags,differ", [
    (["--p-node", "0.3"], "(search.p_node differ)"),
    (["--acc", "base"], "(data.acc differ)"),
    (["--archs", "9", "--iters", "3"], "(data.archs, search.iters differ)"),
])
def test_resume_with_another_configuration(flags, differ, evolve_run, tmp_path, capsys):
    """Refused before any statistics are extracted: the cache (not part of a run's identity)
    is a fresh one here, and must stay empty."""
    argv, reference = evolve_run
    argv = argv + ["--cache", str(tmp_path / "cache")]
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    before = snapshot(tmp_path)
    line = one_error_line(*run_in_process("evolve", argv + ["--out", str(out), "--resume"] + flags, capsys))
    assert line.startswith(f"error: --resume: {out / 'checkpoint.json'} was made with a different "
                           "configuration"), line
    assert line.endswith(f"{differ}; use a new --out"), line
    assert snapshot(tmp_path) == before


def test_damaged_checkpoint_is_one_line(evolve_run, tmp_path, capsys):
    argv, reference = evolve_run
    argv = argv + ["--cache", str(tmp_path / "cache")]
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    (out / "checkpoint.json").write_text((out / "checkpoint.json").read_text()[:-40])
    before = snapshot(tmp_path)
    line = one_error_line(*run_in_process("evolve", argv + ["--out", str(out), "--resume"], capsys))
    assert line == (f"error: {out / 'checkpoint.json'}: damaged checkpoint (JSONDecodeError); "
                    "delete it or use a new --out")
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------- real processes

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_cli_prints_the_same_single_line(inputs, tmp_path, capsys):
    """`python runners/<x>.py`, two processes started together (each pays a ~8 s import on the
    shared cores): a bench record error must print exactly the line the in-process main printed;
    an unreachable dask scheduler (nothing listens on the port: the client's 10 s connect
    timeout) must end with one line too, with no noise from the dask client at exit."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIT_BENCH_101", "AUTOPROX_CACHE")}
    env["OMP_NUM_THREADS"] = "1"
    address = f"tcp://127.0.0.1:{_closed_port()}"
    case = next(k for k in CASES if k.id == "rank-value-outside-space")
    runs = {}
    for name, runner, bad, needles in [
            ("bench", "rank", case.bad, case.needles),
            ("scheduler", "extract", lambda c: ["--backend", "dask", "--scheduler", address, "--jobs", "2"],
             lambda c: [f"error: --scheduler {address}: cannot connect (Timed out trying to connect to "
                        f"{address} after 10 s)"])]:
        c = SimpleNamespace(tmp=tmp_path / name, inp=inputs, json=tmp_path / name / "report.json")
        c.tmp.mkdir()
        c.json.write_text('{"sentinel": 1}')
        argv = runner_argv(runner, c) + bad(c)
        before = snapshot(c.tmp)
        proc = subprocess.Popen([sys.executable, f"runners/{runner}.py", *argv], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        runs[name] = (runner, c, argv, needles, before, proc)
    lines = {}
    try:
        for name, (runner, c, argv, needles, before, proc) in runs.items():
            out, err = proc.communicate(timeout=150)
            lines[name] = one_error_line(proc.returncode, out, err)
            for needle in needles(c):
                assert needle in lines[name], (name, needle, lines[name])
            assert snapshot(c.tmp) == before, name
        runner, c, argv, *_ = runs["bench"]
        assert one_error_line(*run_in_process(runner, argv, capsys)) == lines["bench"]
    finally:
        for *_, proc in runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
