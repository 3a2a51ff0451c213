"""The trainer on a tiny learnable data set: loss falls, checkpoints resume to the exact weights of
an uninterrupted run, distillation runs, settings mismatches and bad inputs are clear errors.

Fixture: Chaoyang layout, 4 classes, each a flat colour (crops and flips keep the colour, so the
task is learnable in a few steps). Arch: the smallest AutoFormer (192 wide, 12 deep) at 16 px,
i.e. one patch token. One torch thread: on shared, oversubscribed cores 2 threads are ~50x slower.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import vit_space.training as training
from runners.train import main as train_main
from vit_space.errors import BadInput
from vit_space.training import distillation_loss, load_arch_file, train

REPO = Path(__file__).resolve().parents[1]
ARCH = {"hidden_dim": 192, "depth": 12, "mlp_ratio": [3.5] * 12, "num_heads": [3] * 12}
COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (230, 220, 40)]
SETTINGS = dict(space="autoformer", dataset="chaoyang", batch_size=8, lr=1e-3, weight_decay=0.05,
                warmup_epochs=1, label_smoothing=0.1, img_size=16, seed=0, device="cpu",
                progress=False)


def write_chaoyang(root, per_class={"train": 6, "test": 2}):
    """24 train and 8 test PNGs; images of a class differ slightly in brightness."""
    for split, n in per_class.items():
        (root / split).mkdir(parents=True)
        entries = []
        for c, colour in enumerate(COLOURS):
            for k in range(n):
                name = f"{split}/{c}_{k}.png"
                Image.new("RGB", (8, 8), tuple(min(255, v + 5 * k) for v in colour)).save(root / name)
                entries.append({"name": name, "label": c})
        (root / f"{split}.json").write_text(json.dumps(entries))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_chaoyang(tmp_path_factory.mktemp("chaoyang"))


def run(out, data, epochs, arch=ARCH, resume=False, **kw):
    return train(arch=arch, data_root=data, out_dir=out, epochs=epochs, resume=resume,
                 **{**SETTINGS, **kw})


@pytest.fixture(scope="module")
def full(data, tmp_path_factory):
    """An uninterrupted 2-epoch run, shared by the tests below."""
    out = tmp_path_factory.mktemp("full")
    return out, run(out, data, 2)


def test_two_epochs_learn_and_write_checkpoint_and_log(full):
    out, result = full
    log = result["epochs"]
    assert [e["epoch"] for e in log] == [1, 2]
    assert log[1]["train_loss"] < log[0]["train_loss"] < 1.3  # ln 4 = 1.386 at chance
    assert log[1]["lr"] < log[0]["lr"] == pytest.approx(1e-3)  # warmup peak, then cosine decay
    assert all(0 <= e["test_top1"] <= 100 and e["seconds"] > 0 for e in log)
    assert result["best_top1"] == max(e["test_top1"] for e in log)
    on_disk = json.loads((out / "log.json").read_text())
    assert on_disk["epochs"] == log and on_disk["config"]["arch"] == ARCH
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)  # plain data only
    assert ckpt["epoch"] == 2 and set(ckpt) >= {"model", "optimizer", "scheduler", "rng", "log"}
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


class Killed(Exception):
    pass


def test_resume_after_interruption_matches_uninterrupted_run(full, data, tmp_path, monkeypatch):
    real_write = training.write_json_atomic

    def write_then_die(path, obj):  # the process dies right after epoch 1 is saved
        real_write(path, obj)
        raise Killed

    monkeypatch.setattr(training, "write_json_atomic", write_then_die)
    with pytest.raises(Killed):
        run(tmp_path, data, 2)
    monkeypatch.setattr(training, "write_json_atomic", real_write)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert len(json.loads((tmp_path / "log.json").read_text())["epochs"]) == 1

    resumed = run(tmp_path, data, 2, resume=True)
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2]
    want = full[1]["epochs"]
    assert [e["train_loss"] for e in resumed["epochs"]] == [e["train_loss"] for e in want]
    a = torch.load(full[0] / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # resuming a finished run trains nothing more
    again = run(tmp_path, data, 2, resume=True)
    assert again["epochs"] == resumed["epochs"]


def test_resume_rejects_other_settings(full, data, tmp_path):
    out = full[0]
    with pytest.raises(BadInput, match=r"checkpoint has lr=0.001, this run has lr=0.002"):
        run(out, data, 2, resume=True, lr=2e-3)
    with pytest.raises(BadInput, match=r"checkpoint has arch="):
        run(out, data, 2, resume=True, arch={**ARCH, "mlp_ratio": [4.0] * 12})
    with pytest.raises(BadInput, match=r"checkpoint has epochs=2, this run has epochs=3"):
        run(out, data, 3, resume=True)
    with pytest.raises(BadInput, match="already holds checkpoint.pt"):
        run(out, data, 2)
    with pytest.raises(BadInput, match="no checkpoint at"):
        run(tmp_path, data, 2, resume=True)


def test_distillation_from_a_trainer_checkpoint(full, data, tmp_path):
    student = {**ARCH, "mlp_ratio": [4.0] * 12}
    result = run(tmp_path, data, 1, arch=student, teacher=full[0] / "checkpoint.pt",
                 distill_alpha=0.7, distill_tau=2.0)
    assert len(result["epochs"]) == 1 and torch.isfinite(torch.tensor(result["epochs"][0]["train_loss"]))
    teacher = json.loads((tmp_path / "log.json").read_text())["config"]["teacher"]
    assert teacher["arch"] == ARCH and (teacher["alpha"], teacher["tau"]) == (0.7, 2.0)
    bare = torch.load(full[0] / "checkpoint.pt", weights_only=True)["model"]
    with pytest.raises(BadInput, match="needs --teacher-arch"):
        run(tmp_path / "b", data, 1, teacher=bare)
    with pytest.raises(BadInput, match="weights do not fit"):
        run(tmp_path / "c", data, 1, teacher=bare, teacher_arch=student)


def test_distillation_loss_terms():
    torch.manual_seed(0)
    s, t, y = torch.randn(5, 4), torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    ce = F.cross_entropy(s, y, label_smoothing=0.1)
    assert torch.allclose(distillation_loss(s, y, None, 0.5, 1.0, 0.1), ce)
    assert torch.allclose(distillation_loss(s, y, t, 0.0, 3.0, 0.1), ce)
    assert torch.allclose(distillation_loss(s, y, s, 0.25, 2.0, 0.1), 0.75 * ce, atol=1e-6)
    p_t = F.softmax(t / 2, -1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / 2, -1))).sum(-1).mean()
    assert torch.allclose(distillation_loss(s, y, t, 1.0, 2.0, 0.1), 4 * kl, atol=1e-6)


def test_arch_file_forms(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"arch": ARCH, "acc": 1.0}))
    (tmp_path / "b.json").write_text(json.dumps(ARCH))
    a, b = (load_arch_file("autoformer", tmp_path / f) for f in ("a.json", "b.json"))
    assert a == b == ARCH
    (tmp_path / "c.json").write_text(json.dumps({**ARCH, "depth": 11}))
    with pytest.raises(BadInput, match=r"c.json: arch.depth: 11 is outside"):
        load_arch_file("autoformer", tmp_path / "c.json")
    with pytest.raises(BadInput, match="file not found"):
        load_arch_file("autoformer", tmp_path / "nope.json")


def test_runner_prints_best_top1(data, tmp_path, capsys):
    (tmp_path / "arch.json").write_text(json.dumps({"arch": ARCH}))
    train_main(["--arch", str(tmp_path / "arch.json"), "--dataset", "chaoyang", "--data-root", str(data),
                "--out", str(tmp_path / "out"), "--epochs", "1", "--batch-size", "8", "--img-size", "16",
                "--warmup-epochs", "0", "--device", "cpu", "--quiet"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("best top-1 ") and (tmp_path / "out" / "checkpoint.pt").is_file()


def test_runner_bad_inputs_exit_2_with_one_line(data, tmp_path, capsys):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(ARCH))
    bad.write_text(json.dumps({"arch": {**ARCH, "hidden_dim": 100}}))
    args = ["--dataset", "chaoyang", "--epochs", "1", "--img-size", "16", "--device", "cpu", "--quiet"]
    cases = {"arch.hidden_dim: 100": ["--arch", str(bad), "--data-root", str(data),
                                      "--out", str(tmp_path / "o1")],
             "directory not found": ["--arch", str(good), "--data-root", str(tmp_path / "missing"),
                                     "--out", str(tmp_path / "o2")]}
    # two real processes (each pays the torch + timm import), started together
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {needle: subprocess.Popen([sys.executable, "runners/train.py"] + args + extra, cwd=REPO,
                                      env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for needle, extra in cases.items()}
    for needle, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
        assert out == ""
    # a malformed root (no train.json) goes the same way; checked in-process to save an import
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as e:
        train_main(["--arch", str(good), "--data-root", str(tmp_path / "empty"),
                    "--out", str(tmp_path / "o3")] + args)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "no train.json" in err[0]
