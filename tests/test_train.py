"""The trainer on a tiny learnable data set, per recipe: loss falls, the EMA moves apart from the raw
weights, checkpoints resume to the exact weights of an uninterrupted run, the ResNet-56 teacher
trains and distils into a ViT (intermediate features, or logits), bad inputs are clear errors.

Fixture: Chaoyang layout, 4 classes, each a flat colour (crops and flips keep the colour, so the
task is learnable in a few steps), 32 px. Arch: the smallest AutoFormer (192 wide, 12 deep), i.e.
four patch tokens. Recipes run with 2 epochs, batch 8, lr 1e-3 and no warm-up; everything else is
the recipe's own. One torch thread: on shared, oversubscribed cores 2 threads are much slower.
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

import vit_space.train.training as training
from runners import search
from runners.train import main as train_main
from vit_space.core.errors import BadInput
from vit_space.models.builders import build_model, transformer_blocks
from vit_space.models.teacher import resnet56
from vit_space.train.distill import InterDistiller, feature_blocks, logit_loss
from vit_space.train.recipes import RECIPES
from vit_space.train.training import load_arch_file, train

REPO = Path(__file__).resolve().parents[1]
ARCH = {"hidden_dim": 192, "depth": 12, "mlp_ratio": [3.5] * 12, "num_heads": [3] * 12}
PIT = {"base_dim": 16, "mlp_ratio": 2, "depth": [1, 4, 2], "num_heads": [2, 2, 2]}
COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (230, 220, 40)]
QUICK = dict(epochs=2, batch_size=8, lr=1e-3, warmup_epochs=0)
SETTINGS = dict(space="autoformer", dataset="chaoyang", img_size=32, seed=0, device="cpu", progress=False)


def write_chaoyang(root, per_class={"train": 12, "test": 2}):
    """48 train and 8 test PNGs; images of a class differ slightly in brightness."""
    for split, n in per_class.items():
        (root / split).mkdir(parents=True)
        entries = []
        for c, colour in enumerate(COLOURS):
            for k in range(n):
                name = f"{split}/{c}_{k}.png"
                Image.new("RGB", (32, 32), tuple(min(255, v + 5 * k) for v in colour)).save(root / name)
                entries.append({"name": name, "label": c})
        (root / f"{split}.json").write_text(json.dumps(entries))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_chaoyang(tmp_path_factory.mktemp("chaoyang"))


def run(out, data, recipe="minimal", arch=ARCH, resume=False, overrides=None, **kw):
    return train(arch=arch, data_root=data, out_dir=out, recipe=recipe, resume=resume,
                 overrides={**QUICK, **(overrides or {})}, **{**SETTINGS, **kw})


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """One uninterrupted 2-epoch run per recipe, shared by the tests below."""
    done = {}
    for name in RECIPES:
        out = tmp_path_factory.mktemp(name)
        done[name] = (out, run(out, data, name))
    return done


def _weights(path, key="model"):
    return torch.load(path / "checkpoint.pt", weights_only=True)[key]


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_two_epochs_per_recipe_learn_and_write_checkpoint_and_log(runs, recipe):
    out, result = runs[recipe]
    log = result["epochs"]
    assert [e["epoch"] for e in log] == [1, 2]
    assert log[1]["train_loss"] < log[0]["train_loss"]
    assert log[1]["lr"] < log[0]["lr"] == pytest.approx(1e-3)  # cosine decay after the peak
    assert all(0 <= e["test_top1"] <= 100 and e["seconds"] > 0 for e in log)
    on_disk = json.loads((out / "log.json").read_text())
    assert on_disk["epochs"] == log and on_disk["config"]["arch"] == ARCH
    want = {**RECIPES[recipe].as_dict(), **QUICK, "recipe": recipe}
    assert {k: on_disk["config"][k] for k in want} == want
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)  # plain data only
    assert ckpt["epoch"] == 2 and set(ckpt) >= {"model", "optimizer", "scheduler", "rng", "log", "scaler"}
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_ema_weights_differ_from_raw_ones(runs):
    out, result = runs["deit"]
    assert RECIPES["deit"].ema_decay == 0.99996
    assert all("ema_top1" in e for e in result["epochs"])
    raw, ema = _weights(out), _weights(out, "ema")
    ema = {k.removeprefix("module."): v for k, v in ema.items()}
    assert raw.keys() == ema.keys()
    assert any(not torch.equal(raw[k], ema[k]) for k in raw if raw[k].is_floating_point())
    assert "ema" not in torch.load(runs["bench"][0] / "checkpoint.pt", weights_only=True)


class Killed(Exception):
    pass


def test_resume_after_interruption_matches_uninterrupted_run(runs, data, tmp_path, monkeypatch):
    """deit draws from every RNG the loop uses (crops, RandAugment, erasing, Mixup, drop-path)."""
    recipe = "deit"
    real_write = training.write_json_atomic

    def write_then_die(path, obj):  # the process dies right after epoch 1 is saved
        real_write(path, obj)
        raise Killed

    monkeypatch.setattr(training, "write_json_atomic", write_then_die)
    with pytest.raises(Killed):
        run(tmp_path, data, recipe)
    monkeypatch.setattr(training, "write_json_atomic", real_write)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 1

    resumed = run(tmp_path, data, recipe, resume=True)
    full_out, full = runs[recipe]
    assert [e["train_loss"] for e in resumed["epochs"]] == [e["train_loss"] for e in full["epochs"]]
    for key in ("model", "ema"):
        a, b = _weights(full_out, key), _weights(tmp_path, key)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    again = run(tmp_path, data, recipe, resume=True)  # resuming a finished run trains nothing more
    assert again["epochs"] == resumed["epochs"]


def test_resume_rejects_other_settings(runs, data, tmp_path):
    out = runs["minimal"][0]
    with pytest.raises(BadInput, match=r"checkpoint has lr=0.001, this run has lr=0.002"):
        run(out, data, resume=True, overrides={"lr": 2e-3})
    with pytest.raises(BadInput, match=r"checkpoint has arch="):
        run(out, data, resume=True, arch={**ARCH, "mlp_ratio": [4.0] * 12})
    with pytest.raises(BadInput, match=r"checkpoint has epochs=2, this run has epochs=3"):
        run(out, data, resume=True, overrides={"epochs": 3})
    with pytest.raises(BadInput, match=r"checkpoint has recipe=minimal, this run has recipe=bench"):
        run(out, data, "bench", resume=True)
    with pytest.raises(BadInput, match="already holds checkpoint.pt"):
        run(out, data)
    with pytest.raises(BadInput, match="no checkpoint at"):
        run(tmp_path, data, resume=True)


@pytest.fixture(scope="module")
def teacher(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("resnet56")
    return out, run(out, data, arch=None, model="resnet56", img_size=None)


def test_resnet56_teacher_trains(teacher):
    out, result = teacher
    log = result["epochs"]
    assert log[1]["train_loss"] < log[0]["train_loss"]
    config = json.loads((out / "log.json").read_text())["config"]
    assert (config["model"], config["img_size"], config["arch"]) == ("resnet56", 32, None)
    state = _weights(out)
    convs = [k for k, v in state.items() if v.ndim == 4 and "downsample" not in k]
    assert len(convs) == 55 and state["head.weight"].shape == (4, 64)  # 55 convs + the head = 56


def test_distill_inter_from_the_resnet56_teacher(runs, teacher, data, tmp_path):
    result = run(tmp_path, data, teacher=teacher[0] / "checkpoint.pt", distill="inter",
                 overrides={"epochs": 1})
    config = json.loads((tmp_path / "log.json").read_text())["config"]
    assert config["distill"]["mode"] == "inter" and config["distill"]["blocks"] == [0, 6, 11]
    assert config["distill"]["teacher"]["model"] == "resnet56"
    maps = _weights(tmp_path, "distiller")
    assert [maps[f"maps.{k}.weight"].shape for k in range(3)] == [(16, 192), (32, 192), (64, 192)]
    # same seed, data and student as the minimal run's first epoch: only the added feature term
    # can make the loss differ (the schedule differs only after the first epoch)
    assert result["epochs"][0]["train_loss"] > runs["minimal"][1]["epochs"][0]["train_loss"]
    with pytest.raises(BadInput, match="--distill-blocks 0,6,12: expected 3 increasing"):
        run(tmp_path / "b", data, teacher=teacher[0] / "checkpoint.pt", distill="inter",
            distill_blocks=[0, 6, 12])
    assert not (tmp_path / "b").exists()


def test_distill_logit_from_a_vit_and_from_the_resnet56(runs, teacher, data, tmp_path):
    student = {**ARCH, "mlp_ratio": [4.0] * 12}
    for k, source in enumerate([runs["minimal"][0], teacher[0]]):
        result = run(tmp_path / str(k), data, arch=student, teacher=source / "checkpoint.pt",
                     distill="logit", distill_alpha=0.7, distill_tau=2.0, overrides={"epochs": 1})
        assert torch.isfinite(torch.tensor(result["epochs"][0]["train_loss"]))
        d = json.loads((tmp_path / str(k) / "log.json").read_text())["config"]["distill"]
        assert (d["mode"], d["alpha"], d["tau"]) == ("logit", 0.7, 2.0)
    bare = _weights(runs["minimal"][0])
    with pytest.raises(BadInput, match="needs --teacher-arch"):
        run(tmp_path / "b", data, teacher=bare, distill="logit")
    with pytest.raises(BadInput, match="weights do not fit"):
        run(tmp_path / "c", data, teacher=bare, teacher_arch=student, distill="logit")
    with pytest.raises(BadInput, match="expected a ViT student and a resnet56 teacher"):
        run(tmp_path / "d", data, teacher=runs["minimal"][0] / "checkpoint.pt", distill="inter")
    with pytest.raises(BadInput, match="--distill and --teacher go together"):
        run(tmp_path / "e", data, distill="inter")


def test_feature_blocks_adapt_to_depth_and_pit_stages():
    def af(depth):
        return {**ARCH, "depth": depth}
    assert feature_blocks("autoformer", af(12), 12) == [0, 6, 11]  # the bench's pairing
    assert feature_blocks("autoformer", af(13), 13) == [0, 6, 12]
    assert feature_blocks("autoformer", af(14), 14) == [0, 7, 13]
    assert feature_blocks("pit", PIT, 7) == [0, 4, 6]  # the last block of each PiT stage
    assert feature_blocks("autoformer", af(12), 12, [1, 2, 3]) == [1, 2, 3]
    for bad in ([0, 6], [0, 6, 6], [6, 0, 11], [0, 6, 12]):
        with pytest.raises(BadInput, match="expected 3 increasing block indices in 0..11"):
            feature_blocks("autoformer", af(12), 12, bad)


def test_inter_loss_on_pit_reaches_the_maps():
    student = build_model("pit", PIT, 4, 32)
    blocks = transformer_blocks(student)
    chosen = feature_blocks("pit", PIT, len(blocks))
    torch.manual_seed(0)
    distiller = InterDistiller(resnet56(4).eval(), 32, chosen,
                               [blocks[i].mlp.fc2.out_features for i in chosen])
    distiller.attach(blocks)
    x = torch.randn(2, 3, 32, 32)
    student(x)
    loss = distiller.loss(x)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in distiller.maps)
    assert [m.in_features for m in distiller.maps] == [32, 32, 32]  # PiT stage widths base_dim x heads


def test_logit_loss_terms():
    torch.manual_seed(0)
    s, t, y = torch.randn(5, 4), torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    ce = F.cross_entropy(s, y)
    assert torch.allclose(logit_loss(s, ce, t, 0.0, 3.0), ce)
    assert torch.allclose(logit_loss(s, ce, s, 0.25, 2.0), 0.75 * ce, atol=1e-6)
    p_t = F.softmax(t / 2, -1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / 2, -1))).sum(-1).mean()
    assert torch.allclose(logit_loss(s, ce, t, 1.0, 2.0), 4 * kl, atol=1e-6)


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
    with pytest.raises(BadInput, match="--rank 2: only for a search result"):
        load_arch_file("autoformer", tmp_path / "a.json", rank=2)


def test_search_json_is_accepted_top1_or_rank(tmp_path, capsys):
    """The very file runners/search.py --json writes, passed to the trainer's --arch."""
    found = tmp_path / "found.json"
    search.main(["--proxy", "params", "--max-params", "6e6", "--samples", "4", "--top", "3",
                 "--archs", "8", "--img-size", "32", "--batch-size", "2", "--datasets", "c100",
                 "--device", "cpu", "--cache", str(tmp_path / "cache"), "--quiet", "--json", str(found)])
    capsys.readouterr()
    top = json.loads(found.read_text())["top"]
    assert len(top) == 3
    assert load_arch_file("autoformer", found) == top[0]["arch"]
    assert load_arch_file("autoformer", found, rank=3) == top[2]["arch"]
    with pytest.raises(BadInput, match=r"--rank 4: expected an integer in 1..3"):
        load_arch_file("autoformer", found, rank=4)
    with pytest.raises(BadInput, match="a search of the autoformer space, not --space pit"):
        load_arch_file("pit", found)
    broken = json.loads(found.read_text())
    broken["top"][1]["arch"]["hidden_dim"] = 100
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(BadInput, match=r"broken.json: top\[1\].arch.hidden_dim: 100 is outside"):
        load_arch_file("autoformer", tmp_path / "broken.json", rank=2)


def test_runner_trains_the_searchs_rank_k_arch(data, tmp_path, capsys):
    second = {**ARCH, "mlp_ratio": [4.0] * 12}
    (tmp_path / "found.json").write_text(json.dumps({"space": "autoformer", "top": [
        {"arch": ARCH, "score": 2.0}, {"arch": second, "score": 1.0}]}))
    train_main(["--arch", str(tmp_path / "found.json"), "--rank", "2", "--dataset", "chaoyang",
                "--data-root", str(data), "--out", str(tmp_path / "out"), "--recipe", "minimal",
                "--epochs", "1", "--batch-size", "16", "--img-size", "32", "--device", "cpu", "--quiet"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("best top-1 ") and (tmp_path / "out" / "checkpoint.pt").is_file()
    assert json.loads((tmp_path / "out" / "log.json").read_text())["config"]["arch"] == second


def test_runner_bad_inputs_exit_2_with_one_line(data, tmp_path, capsys):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(ARCH))
    bad.write_text(json.dumps({"arch": {**ARCH, "hidden_dim": 100}}))
    args = ["--dataset", "chaoyang", "--epochs", "1", "--img-size", "32", "--device", "cpu", "--quiet"]
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
    # in-process (saves an import): a malformed root, an unknown recipe, --model resnet56 with
    # an arch, --distill without a teacher; nothing is created
    (tmp_path / "empty").mkdir()
    for extra, needle in [(["--data-root", str(tmp_path / "empty")], "no train.json"),
                          (["--recipe", "fast"], "--recipe 'fast': unknown (expected one of bench, deit, minimal)"),
                          (["--model", "resnet56"], "--arch: the resnet56 teacher has no arch"),
                          (["--distill", "inter"], "--distill and --teacher go together"),
                          (["--mixup", "0.8", "--batch-size", "7"], "expected an even batch size")]:
        argv = ["--arch", str(good), "--data-root", str(data), "--out", str(tmp_path / "o3")] + args + extra
        with pytest.raises(SystemExit) as e:
            train_main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and needle in err[0], err
        assert not (tmp_path / "o3").exists()
