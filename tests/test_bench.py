"""ViT-Bench-101: reading the authors' files in place, the .pth route, schema errors, lookup order,
the 60/40 split and the data-set -> column mapping.

The bench files are never copied into the repository: fixtures are written to tmp_path.
"""
import copy
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vit_space.core.errors import BadInput
from vit_space.data.bench import PACKAGED_BENCH, Bench, column_for, find_bench, load_bench, parse_datasets
from vit_space.scoring.jcm import correlations

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "vit_bench_101"  # the copy beside the project, if any

# columns as the README of ViT-Bench-101 lists them
README_COLUMNS = {
    "autoformer": ["c100_base_acc", "c100_kd_acc", "flower_base_acc", "flower_kd_acc",
                   "chaoyang_base_acc", "chaoyang_kd_acc", "imagenet_super_acc"],
    "pit": ["c100_base_acc", "c100_kd_acc", "flower_base_acc", "flower_kd_acc",
            "chaoyang_base_acc", "chaoyang_kd_acc"],
}


def raw(space):
    return json.loads((PACKAGED_BENCH / f"{space}.json").read_text())


@pytest.fixture(autouse=True)
def no_bench_env(monkeypatch):
    monkeypatch.delenv("VIT_BENCH_101", raising=False)


# ---------------------------------------------------------------- the real bench

@pytest.mark.parametrize("space", ["autoformer", "pit"])
def test_real_bench_loads(space, autoformer_bench, pit_bench):
    bench = autoformer_bench if space == "autoformer" else pit_bench
    assert isinstance(bench, Bench) and bench.space == space
    assert len(bench) == 100
    source = raw(space)
    for record, original in zip(bench.records, source):
        assert set(record) == {"arch", *README_COLUMNS[space]}
        assert record == original  # every value as the authors wrote it
        for column in README_COLUMNS[space]:
            value = record[column]
            assert isinstance(value, float) and 0 < value <= 100, (column, value)
    # real spread, not a constant column
    for column in README_COLUMNS[space]:
        assert len({r[column] for r in bench.records}) > 20


def test_real_bench_archs_are_in_their_spaces(autoformer_bench, pit_bench):
    dims = {r["arch"]["hidden_dim"] for r in autoformer_bench.records}
    assert dims <= {192, 216, 240}
    assert all(len(r["arch"]["mlp_ratio"]) == r["arch"]["depth"] for r in autoformer_bench.records)
    assert {r["arch"]["base_dim"] for r in pit_bench.records} <= {16, 24, 32, 40}
    assert autoformer_bench.archs([0, 5]) == [raw("autoformer")[0]["arch"], raw("autoformer")[5]["arch"]]
    assert pit_bench.accuracies([3, 1], "c100_kd_acc") == [raw("pit")[3]["c100_kd_acc"],
                                                            raw("pit")[1]["c100_kd_acc"]]


def test_space_inferred_from_file_name():
    assert load_bench(PACKAGED_BENCH / "pit.json").space == "pit"
    with pytest.raises(BadInput, match="cannot tell the space"):
        load_bench(PACKAGED_BENCH / "README.md")


# ---------------------------------------------------------------- the authors' .pth format

@pytest.mark.parametrize("space", ["autoformer", "pit"])
def test_pth_of_plain_dicts_reads_like_the_json(space, tmp_path, autoformer_bench, pit_bench):
    bench = autoformer_bench if space == "autoformer" else pit_bench
    records = raw(space)[:6]
    path = tmp_path / f"gt_{space}.pth"
    torch.save(records, path)
    loaded = load_bench(path)  # space from the file name
    assert loaded.space == space and len(loaded) == 6
    assert loaded.records == bench.records[:6]
    # found by directory lookup when there is no JSON next to it
    assert find_bench(space, str(tmp_path)) == path


def _write_marker(path):
    Path(path).write_text("pickled code ran")


class Payload:
    """Unpickling this calls _write_marker: what a malicious .pth would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (_write_marker, (self.marker,))


class PlainObject:
    def __init__(self):
        self.value = 76.0


def test_pth_with_code_is_refused_and_never_run(tmp_path):
    # control: the payload is live under an ordinary unpickler
    control = tmp_path / "control_marker"
    pickle.loads(pickle.dumps(Payload(control)))
    assert control.exists()

    marker = tmp_path / "marker"
    record = dict(raw("autoformer")[0], c100_kd_acc=Payload(marker))
    path = tmp_path / "gt_autoformer.pth"
    torch.save([record], path)
    assert not marker.exists()
    with pytest.raises(BadInput, match=r"gt_autoformer\.pth: holds objects other than plain lists"):
        load_bench(path)
    assert not marker.exists()


def test_pth_with_custom_class_is_refused(tmp_path):
    path = tmp_path / "gt_pit.pth"
    torch.save([dict(raw("pit")[0], c100_kd_acc=PlainObject())], path)
    with pytest.raises(BadInput, match=r"gt_pit\.pth"):
        load_bench(path)


@pytest.mark.parametrize("content", [b"", b"[1, 2, 3]", b"\x80\x02garbage"])
def test_pth_not_a_torch_file(tmp_path, content):
    path = tmp_path / "gt_autoformer.pth"
    path.write_bytes(content)
    with pytest.raises(BadInput, match=r"gt_autoformer\.pth"):
        load_bench(path)


def test_pth_dict_and_tensor_values_are_refused(tmp_path):
    path = tmp_path / "gt_autoformer.pth"
    torch.save({"records": raw("autoformer")[:2]}, path)
    with pytest.raises(BadInput, match=r"gt_autoformer\.pth: expected a non-empty list"):
        load_bench(path)
    torch.save([dict(raw("autoformer")[0], c100_kd_acc=torch.tensor(76.0))], path)
    with pytest.raises(BadInput, match=r"gt_autoformer\.pth record 0 field c100_kd_acc"):
        load_bench(path)


# ---------------------------------------------------------------- schema errors

def write_records(tmp_path, records, name="autoformer.json"):
    path = tmp_path / name
    path.write_text(json.dumps(records))  # NaN is written as the JSON extension token NaN
    return path


def three(space="autoformer"):
    return copy.deepcopy(raw(space)[:3])


def test_valid_fixture_loads(tmp_path):
    assert len(load_bench(write_records(tmp_path, three()), "autoformer")) == 3


def test_file_missing(tmp_path):
    with pytest.raises(BadInput, match=r"nothere\.json: bench file not found"):
        load_bench(tmp_path / "nothere.json", "autoformer")
    with pytest.raises(BadInput, match="not found"):
        load_bench(tmp_path, "autoformer")  # a directory is not a bench file


def test_not_json(tmp_path):
    path = tmp_path / "autoformer.json"
    path.write_text('[{"arch": ')
    with pytest.raises(BadInput, match=r"autoformer\.json: not JSON"):
        load_bench(path)
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(BadInput, match=r"autoformer\.json"):
        load_bench(path)


@pytest.mark.parametrize("data,kind", [({"records": []}, "dict"), ([], "list"), ("text", "str"),
                                       (None, "NoneType")])
def test_top_level_not_a_nonempty_list(tmp_path, data, kind):
    path = write_records(tmp_path, data)
    with pytest.raises(BadInput, match=rf"autoformer\.json: expected a non-empty list of records, got {kind}"):
        load_bench(path)


def _mutate(fn):
    def make():
        records = three()
        fn(records)
        return records
    return make


def _drop(d, key):
    del d[key]


def _set(d, key, value):
    d[key] = value


SCHEMA_CASES = {
    "record not an object": (_mutate(lambda r: r.__setitem__(2, [1, 2])), r"record 2: expected an object"),
    "record a string": (_mutate(lambda r: r.__setitem__(1, "arch")), r"record 1: expected an object"),
    "missing arch": (_mutate(lambda r: _drop(r[2], "arch")), r"record 2: missing field 'arch'"),
    "arch not an object": (_mutate(lambda r: _set(r[1], "arch", 12)), r"record 1 field arch: expected an object"),
    "arch missing field": (_mutate(lambda r: _drop(r[2]["arch"], "depth")),
                           r"record 2 field arch: missing field 'depth'"),
    "arch extra field": (_mutate(lambda r: _set(r[2]["arch"], "patch", 16)),
                         r"record 2 field arch: unknown field 'patch'"),
    "wrong list length": (_mutate(lambda r: _set(r[1]["arch"], "mlp_ratio", r[1]["arch"]["mlp_ratio"][:-1])),
                          r"record 1 field arch\.mlp_ratio: expected a list of length"),
    "value outside": (_mutate(lambda r: _set(r[2]["arch"], "hidden_dim", 256)),
                      r"record 2 field arch\.hidden_dim: 256 is outside the space"),
    "list value outside": (_mutate(lambda r: r[0]["arch"]["num_heads"].__setitem__(3, 6)),
                           r"record 0 field arch\.num_heads\[3\]: 6 is outside the space"),
    "int field as float": (_mutate(lambda r: _set(r[2]["arch"], "depth", float(r[2]["arch"]["depth"]))),
                           r"record 2 field arch\.depth"),
    "unknown record field": (_mutate(lambda r: _set(r[2], "top1", 70.0)), r"record 2: unknown field 'top1'"),
    "accuracy above 100": (_mutate(lambda r: _set(r[2], "c100_kd_acc", 100.5)),
                           r"record 2 field c100_kd_acc: 100\.5 is not an accuracy"),
    "accuracy below 0": (_mutate(lambda r: _set(r[1], "flower_base_acc", -0.1)),
                         r"record 1 field flower_base_acc: -0\.1 is not an accuracy"),
    "accuracy a string": (_mutate(lambda r: _set(r[2], "chaoyang_kd_acc", "84.1")),
                          r"record 2 field chaoyang_kd_acc: '84\.1' is not an accuracy"),
    "accuracy a bool": (_mutate(lambda r: _set(r[0], "c100_base_acc", True)),
                        r"record 0 field c100_base_acc: True"),
    "accuracy a list": (_mutate(lambda r: _set(r[0], "c100_base_acc", [70.0])), r"record 0 field c100_base_acc"),
    "accuracy NaN": (_mutate(lambda r: _set(r[2], "imagenet_super_acc", float("nan"))),
                     r"record 2 field imagenet_super_acc: nan is not an accuracy"),
    "accuracy inf": (_mutate(lambda r: _set(r[1], "c100_kd_acc", float("inf"))), r"record 1 field c100_kd_acc: inf"),
}


@pytest.mark.parametrize("case", list(SCHEMA_CASES))
def test_schema_errors_name_file_record_and_field(tmp_path, case):
    make, pattern = SCHEMA_CASES[case]
    path = write_records(tmp_path, make(), name="my_autoformer.json")
    with pytest.raises(BadInput) as info:
        load_bench(path, "autoformer")
    message = str(info.value)
    assert message.startswith("my_autoformer.json record "), message
    assert "\n" not in message
    assert __import__("re").search(pattern, message), message


def test_first_bad_record_is_reported(tmp_path):
    records = three()
    records[0]["c100_kd_acc"] = 101.0
    records[2]["c100_kd_acc"] = -5.0
    with pytest.raises(BadInput, match=r"record 0 field c100_kd_acc"):
        load_bench(write_records(tmp_path, records), "autoformer")


def test_pit_record_with_autoformer_column_is_refused(tmp_path):
    records = three("pit")
    records[1]["imagenet_super_acc"] = 70.0
    with pytest.raises(BadInput, match=r"pit\.json record 1: unknown field 'imagenet_super_acc'"):
        load_bench(write_records(tmp_path, records, "pit.json"))


def test_autoformer_arch_in_pit_bench_is_refused(tmp_path):
    records = three("pit")
    records[0]["arch"] = raw("autoformer")[0]["arch"]
    with pytest.raises(BadInput, match=r"pit\.json record 0 field arch: missing field 'base_dim'"):
        load_bench(write_records(tmp_path, records, "pit.json"))


def test_none_accuracies_are_kept_and_skipped_per_column(tmp_path, autoformer_bench):
    records = copy.deepcopy(raw("autoformer")[:12])
    for i in (2, 5, 9):
        records[i]["c100_kd_acc"] = None
    del records[4]["chaoyang_base_acc"]  # an absent column reads as None too
    bench = load_bench(write_records(tmp_path, records), "autoformer")
    kd = bench.accuracies(range(12), "c100_kd_acc")
    assert [i for i, a in enumerate(kd) if a is None] == [2, 5, 9]
    assert bench.records[4]["chaoyang_base_acc"] is None
    assert None not in bench.accuracies(range(12), "c100_base_acc")  # other columns untouched
    assert bench.records[0] == autoformer_bench.records[0]

    scores = np.arange(12, dtype=float) ** 1.5 + np.sin(np.arange(12))
    known = [i for i in range(12) if kd[i] is not None]
    with_none = correlations(scores, kd)
    without = correlations(scores[known], [kd[i] for i in known])
    assert with_none is not None and with_none == pytest.approx(without)
    # and it is a real correlation, not one that ignores the data
    assert with_none != pytest.approx(correlations(scores[::-1].copy(), kd))


# ---------------------------------------------------------------- find_bench

def _small_bench_dir(root, space="autoformer", n=5, pth=False):
    root.mkdir(parents=True, exist_ok=True)
    records = raw(space)[:n]
    if pth:
        torch.save(records, root / f"gt_{space}.pth")
    else:
        (root / f"{space}.json").write_text(json.dumps(records))
    return root


def test_find_bench_by_file_and_directory():
    assert find_bench("autoformer", str(PACKAGED_BENCH / "autoformer.json")) == PACKAGED_BENCH / "autoformer.json"
    assert find_bench("autoformer", str(PACKAGED_BENCH)) == PACKAGED_BENCH / "autoformer.json"
    assert find_bench("pit", str(PACKAGED_BENCH)) == PACKAGED_BENCH / "pit.json"


def test_find_bench_option_beats_environment(tmp_path, monkeypatch):
    env_dir = _small_bench_dir(tmp_path / "env")
    monkeypatch.setenv("VIT_BENCH_101", str(env_dir))
    assert find_bench("autoformer", str(PACKAGED_BENCH)) == PACKAGED_BENCH / "autoformer.json"


def test_find_bench_environment_beats_default(tmp_path, monkeypatch):
    env_dir = _small_bench_dir(tmp_path / "env")
    monkeypatch.setenv("VIT_BENCH_101", str(env_dir))
    found = find_bench("autoformer")
    assert found == env_dir / "autoformer.json"
    assert len(load_bench(found)) == 5
    # the variable may name the file itself
    monkeypatch.setenv("VIT_BENCH_101", str(found))
    assert find_bench("autoformer") == found
    # a variable that points at nothing is an error, not a silent fall-back to the default
    monkeypatch.setenv("VIT_BENCH_101", str(tmp_path / "empty"))
    with pytest.raises(BadInput, match=r"\$VIT_BENCH_101=.*empty: no autoformer\.json or gt_autoformer\.pth"):
        find_bench("autoformer")


def test_find_bench_default():
    for space in ("autoformer", "pit"):
        found = find_bench(space)
        assert found.name == f"{space}.json"
        assert found.parent.resolve() == PACKAGED_BENCH.resolve()
        assert len(load_bench(found)) == 100


def test_find_bench_prefers_json_and_takes_pth(tmp_path):
    both = _small_bench_dir(_small_bench_dir(tmp_path / "both", "pit", 3, pth=True), "pit", 4)
    assert find_bench("pit", str(both)) == both / "pit.json"
    only_pth = _small_bench_dir(tmp_path / "pth", "pit", 3, pth=True)
    assert find_bench("pit", str(only_pth)) == only_pth / "gt_pit.pth"
    with pytest.raises(BadInput, match="no autoformer.json"):
        find_bench("autoformer", str(only_pth))  # the directory holds the other space only


def test_find_bench_missing(tmp_path):
    with pytest.raises(BadInput, match=r"^--bench .*nope: no autoformer\.json or gt_autoformer\.pth found"):
        find_bench("autoformer", str(tmp_path / "nope"))
    with pytest.raises(BadInput, match="--bench"):
        find_bench("pit", str(tmp_path))  # exists, but empty
    with pytest.raises(BadInput, match="--space"):
        find_bench("vit", str(PACKAGED_BENCH))


# ---------------------------------------------------------------- split and head

def test_split_60_40(autoformer_bench):
    search, test = autoformer_bench.split("search"), autoformer_bench.split("test")
    assert len(search) == 60 and len(test) == 40
    assert not set(search) & set(test)
    assert set(search) | set(test) == set(range(100))
    assert search == sorted(search) and test == sorted(test)
    assert autoformer_bench.split("val") == search
    assert autoformer_bench.split("all") == list(range(100))
    assert search != list(range(60))  # shuffled, not the file's first 60


def test_split_seeded(pit_bench):
    assert pit_bench.split("search", seed=3) == pit_bench.split("search", seed=3)
    assert pit_bench.split("test", seed=3) == pit_bench.split("test", seed=3)
    assert pit_bench.split("search", seed=3) != pit_bench.split("search", seed=4)
    assert pit_bench.split("search") == pit_bench.split("search", seed=0)
    assert set(pit_bench.split("search", 4)) | set(pit_bench.split("test", 4)) == set(range(100))


@pytest.mark.parametrize("name", ["train", "", "Search", "valid"])
def test_split_unknown(autoformer_bench, name):
    with pytest.raises(BadInput, match="--split"):
        autoformer_bench.split(name)


def test_head(autoformer_bench):
    assert autoformer_bench.head(None) is autoformer_bench
    small = autoformer_bench.head(4)
    assert len(small) == 4 and small.records == autoformer_bench.records[:4]
    assert len(autoformer_bench.head(100)) == 100
    ten = autoformer_bench.head(10)
    assert len(ten.split("search")) == 6 and len(ten.split("test")) == 4
    assert set(ten.split("all")) == set(range(10))
    for n in (3, 0, -1, 101):
        with pytest.raises(BadInput, match=rf"--archs {n}: expected 4 to 100"):
            autoformer_bench.head(n)


# ---------------------------------------------------------------- columns

@pytest.mark.parametrize("dataset,prefix", [("c100", "c100"), ("flowers", "flower"), ("chaoyang", "chaoyang")])
@pytest.mark.parametrize("acc", ["kd", "base"])
@pytest.mark.parametrize("space", ["autoformer", "pit"])
def test_column_for(dataset, prefix, acc, space):
    column = column_for(dataset, acc, space)
    assert column == f"{prefix}_{acc}_acc"
    assert column in README_COLUMNS[space]


def test_column_for_imagenet():
    assert column_for("imagenet") == "imagenet_super_acc"
    assert column_for("imagenet", "base", "autoformer") == "imagenet_super_acc"
    with pytest.raises(BadInput, match="--datasets imagenet: the pit bench has no imagenet"):
        column_for("imagenet", "kd", "pit")


def test_column_for_bad_names():
    with pytest.raises(BadInput, match="--datasets cifar10"):
        column_for("cifar10")
    with pytest.raises(BadInput, match="--acc distill"):
        column_for("c100", "distill")


def test_parse_datasets():
    assert parse_datasets("c100, flowers,chaoyang", "pit") == ["c100", "flowers", "chaoyang"]
    assert parse_datasets("imagenet", "autoformer") == ["imagenet"]
    with pytest.raises(BadInput, match="--datasets"):
        parse_datasets(" , ", "autoformer")
    with pytest.raises(BadInput, match="--datasets imagenet"):
        parse_datasets("c100,imagenet", "pit")


def test_bench_values_are_finite(autoformer_bench, pit_bench):
    for bench in (autoformer_bench, pit_bench):
        for r in bench.records:
            assert all(math.isfinite(r[c]) for c in README_COLUMNS[bench.space])


# ---------------------------------------------------------------- the packaged bench

def test_packaged_bench_is_the_authors_files_with_their_origin():
    """The package ships exactly the two ground-truth files and a README naming their origin and
    license; where the copy beside the project exists, the packaged one equals it byte for byte."""
    assert sorted(p.name for p in PACKAGED_BENCH.iterdir()) == ["README.md", "autoformer.json", "pit.json"]
    readme = (PACKAGED_BENCH / "README.md").read_text()
    for fact in ("gt_results/gt_autoformer.pth", "gt_results/gt_pit.pth", "Apache License 2.0", "one to one"):
        assert fact in readme
    if SHARED.is_dir():
        for name in ("autoformer.json", "pit.json"):
            assert (PACKAGED_BENCH / name).read_bytes() == (SHARED / name).read_bytes()


def test_packaged_bench_is_package_data(tmp_path):
    """What `pip install .` copies: setup.py's build of the packages holds the bench."""
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True)
    built = tmp_path / "vit_space" / "data" / "bench"
    assert sorted(p.name for p in built.iterdir()) == ["README.md", "autoformer.json", "pit.json"]
    assert (built / "pit.json").read_bytes() == (PACKAGED_BENCH / "pit.json").read_bytes()


def test_rank_runs_with_no_bench_beside_the_project(tmp_path):
    """A clone with no ../shared and no $VIT_BENCH_101 reads the packaged bench: #params has its
    known Kendall tau on c100 over the 100 AutoFormer archs."""
    repo = tmp_path / "clone"
    for part in ("primitives", "gp", "vit_space", "runners", "results"):
        shutil.copytree(ROOT / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    assert not (tmp_path / "shared").exists()
    env = {k: v for k, v in os.environ.items() if k not in ("VIT_BENCH_101", "PYTHONPATH")}
    env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "runners/rank.py", "--proxy", "params", "--split", "all",
                          "--datasets", "c100", "--quiet", "--cache", str(tmp_path / "cache"),
                          "--json", str(tmp_path / "rank.json")],
                         cwd=repo, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "rank.json").read_text())
    assert report["n"] == 100
    assert round(report["proxies"]["params"]["datasets"]["c100_kd_acc"]["kendall"], 3) == 0.548
