"""Train a ViT of a search space, or the CIFAR ResNet-56 teacher, with a named recipe, resumably.

Everything the recipe drives comes from timm (vit_space/train/recipes.py) and the data from torchvision
(vit_space/data/datasets.py); this module runs the loop: optional distillation (vit_space/train/distill.py),
AMP on CUDA, top-1 of the model (and of its EMA) on the test split after every epoch.

Resuming must give the same weights as never stopping, so a checkpoint holds everything that
changes the math from here on: model, EMA, distillation maps, optimizer, scheduler, AMP scaler, the
RNG states (torch drives crops and drop-path, Python's `random` and NumPy drive RandAugment, random
erasing and Mixup, the loader's own generator drives shuffling) and the settings, which a resume
must match. Checkpoints hold only tensors and plain containers, so they load with weights_only=True.
"""
from __future__ import annotations

import hashlib
import json
import random
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vit_space.core.atomic import torch_save_atomic, write_json_atomic
from vit_space.core.errors import BadInput
from vit_space.data.datasets import NUM_CLASSES, eval_transform, open_dataset
from vit_space.data.spaces import get_space
from vit_space.models.builders import build_model, transformer_blocks
from vit_space.models.teacher import resnet56
from vit_space.setup_run import resolve_device
from vit_space.train.distill import DISTILL_MODES, InterDistiller, feature_blocks, logit_loss
from vit_space.train.recipes import (get_recipe, make_criterion, make_ema, make_mixup, make_optimizer,
                               make_scheduler, set_drop_path, train_transform)

CHECKPOINT = "checkpoint.pt"
LOG = "log.json"
MODELS = ("vit", "resnet56")


def load_arch_file(space: str, path, flag: str = "--arch", rank: int = 1) -> dict:
    """Read an arch from JSON and validate it against the space: {"arch": {...}}, a bare arch dict,
    or runners/search.py's --json output ({"space": ..., "top": [{"arch": ...}, ...]}), whose
    rank-th arch (1 = the best) is taken."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BadInput(f"{flag} {path}: file not found") from None
    except (OSError, ValueError) as exc:
        raise BadInput(f"{flag} {path}: not a readable JSON file ({exc})") from None
    where = f"{flag} {path}: arch"
    if isinstance(data, dict) and "top" in data:
        top = data["top"]
        if data.get("space", space) != space:
            raise BadInput(f"{flag} {path}: a search of the {data['space']} space, not --space {space}")
        if not isinstance(top, list) or not top:
            raise BadInput(f"{flag} {path}: 'top' must be a non-empty list of {{\"arch\": ...}} entries")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= len(top):
            raise BadInput(f"--rank {rank!r}: expected an integer in 1..{len(top)} (the archs in {path})")
        data, where = top[rank - 1], f"{flag} {path}: top[{rank - 1}].arch"
    elif rank != 1:
        raise BadInput(f"--rank {rank}: only for a search result ({flag} {path} holds one arch)")
    if isinstance(data, dict) and "arch" in data:
        data = data["arch"]
    return get_space(space).validate(data, where=where)


def _load(path, what: str):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BadInput(f"{what} {path}: file not found") from None
    except Exception as exc:  # torch raises assorted types for damaged or non-tensor files
        raise BadInput(f"{what} {path}: not a loadable checkpoint ({type(exc).__name__})") from None


def _digest(state: dict) -> str:
    """Fingerprint of a state dict, so a resume can tell whether the teacher is still the same one."""
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def build_network(model: str, space: str, arch, num_classes: int, img_size: int, device="cpu"):
    """A ViT of the space (seeded from its arch, initialised on `device`: its weights are those
    the statistics of that device saw) or the ResNet-56 (seeded by the caller, on the CPU)."""
    if model == "resnet56":
        return resnet56(num_classes)
    return build_model(space, arch, num_classes, img_size, device)


def load_teacher(teacher, teacher_arch, space, num_classes, img_size, device):
    """Build the teacher from a trainer checkpoint (its model, arch and input size are inside) or
    a bare ViT state dict (needs teacher_arch; the student's space and size); either may be a
    path or the loaded dict. Returns (teacher, its input size, identity for the settings)."""
    obj = _load(teacher, "--teacher") if isinstance(teacher, (str, Path)) else teacher
    if not isinstance(obj, dict):
        raise BadInput(f"--teacher: expected a checkpoint or a state dict, got {type(obj).__name__}")
    state, arch, kind, size = obj, teacher_arch, "vit", img_size
    if isinstance(obj.get("model"), dict):  # a checkpoint of this trainer
        state, saved = obj["model"], obj.get("config", {})
        kind, size = saved.get("model", "vit"), saved.get("img_size", img_size)
        space = saved.get("space", space)
        if arch is not None and saved.get("arch") is not None and arch != saved["arch"]:
            raise BadInput("--teacher-arch: differs from the arch stored in the teacher checkpoint")
        arch = arch if arch is not None else saved.get("arch")
    if kind == "vit" and arch is None:
        raise BadInput("--teacher: a bare state dict needs --teacher-arch")
    net = build_network(kind, space, arch, num_classes, size)
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        detail = str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else type(exc).__name__
        raise BadInput(f"--teacher: weights do not fit the teacher {kind} at img_size {size} "
                       f"with {num_classes} classes ({detail})") from None
    for p in net.parameters():
        p.requires_grad_(False)
    ident = {"model": kind, "arch": arch if kind == "vit" else None, "img_size": size,
             "sha256": _digest(state)}
    return net.to(device).eval(), size, ident


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_settings(saved: dict, config: dict, path: Path) -> None:
    """A resume must continue the same run: name the first setting that differs."""
    for key in config:
        if saved.get(key) != config[key]:
            raise BadInput(f"--resume {path}: checkpoint has {key}={_short(saved.get(key))}, this run "
                           f"has {key}={_short(config[key])} (use the same settings or a new --out)")


def _check_numbers(**values) -> None:
    """Reject nonsense settings up front; each entry is (value, lowest allowed, integer?)."""
    for name, (value, low, integer) in values.items():
        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind) or not value >= low:
            raise BadInput(f"{name} {value!r}: expected {'an integer' if integer else 'a number'} >= {low}")


def _rng_state(loader_gen) -> dict:
    """Every RNG the loop draws from, as tensors and plain values (weights_only-loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "loader": loader_gen.get_state(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(state: dict, loader_gen) -> None:
    torch.set_rng_state(state["torch"])
    loader_gen.set_state(state["loader"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(state["python"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _amp(device: torch.device):
    """Autocast on CUDA (bfloat16 where supported, else float16 with a gradient scaler); fp32 on CPU."""
    if device.type != "cuda":
        return nullcontext, torch.amp.GradScaler("cuda", enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return (lambda: torch.autocast("cuda", dtype=dtype),
            torch.amp.GradScaler("cuda", enabled=dtype == torch.float16))


@torch.no_grad()
def evaluate(model, loader, device, autocast=nullcontext) -> float:
    """Top-1 accuracy in percent."""
    model.eval()
    correct = total = 0
    for x, y in loader:
        with autocast():
            pred = model(x.to(device)).argmax(dim=-1)
        correct += int((pred.cpu() == y).sum())
        total += len(y)
    return 100.0 * correct / total


def _check_img_size(model: str, img_size: int) -> None:
    if isinstance(img_size, bool) or not isinstance(img_size, int):
        raise BadInput(f"--img-size {img_size!r}: expected an integer")
    if model == "vit" and (img_size < 16 or img_size % 16):
        raise BadInput(f"--img-size {img_size!r}: expected a multiple of 16 (the patch size)")
    if model == "resnet56" and img_size < 8:
        raise BadInput(f"--img-size {img_size!r}: expected at least 8 (the ResNet-56 halves it twice)")


def train(space="autoformer", arch=None, dataset="c100", data_root=None, out_dir=None, recipe="bench",
          overrides=None, img_size=None, seed=0, device="auto", resume=False, model="vit",
          distill=None, teacher=None, teacher_arch=None, distill_alpha=0.5, distill_tau=1.0,
          distill_blocks=None, workers=0, progress=True) -> dict:
    """Train on `dataset` with the named recipe (`overrides` replaces some of its settings),
    checkpointing to out_dir every epoch; returns the log summary.

    Deterministic given the seed and the same number of workers. An interrupted run resumed with
    the same settings ends with the same weights. Every input is checked before out_dir is made.
    """
    if model not in MODELS:
        raise BadInput(f"--model {model!r}: unknown (expected one of {', '.join(MODELS)})")
    rec = get_recipe(recipe).override(**(overrides or {}))
    _check_numbers(seed=(seed, 0, True), workers=(workers, 0, True),
                   distill_alpha=(distill_alpha, 0, False), distill_tau=(distill_tau, 0, False))
    if distill_alpha > 1 or distill_tau == 0:
        raise BadInput("expected distill_alpha <= 1 and distill_tau > 0")
    if distill is not None and distill not in DISTILL_MODES:
        raise BadInput(f"--distill {distill!r}: unknown (expected one of {', '.join(DISTILL_MODES)})")
    if (distill is None) != (teacher is None):
        raise BadInput("--distill and --teacher go together (a teacher checkpoint and a mode)")
    if teacher is None and teacher_arch is not None:
        raise BadInput("--teacher-arch: given without --teacher")
    img_size = (32 if model == "resnet56" else 224) if img_size is None else img_size
    _check_img_size(model, img_size)
    device = torch.device(resolve_device(device))
    if model == "vit":
        get_space(space).validate(arch)
    elif arch is not None:
        raise BadInput("--arch: the resnet56 teacher has no arch (leave --arch out)")
    train_set = open_dataset(dataset, data_root, "train", train_transform(rec, img_size))
    test_set = open_dataset(dataset, data_root, "test", eval_transform(img_size))
    if rec.mixing and len(train_set) < rec.batch_size:
        raise BadInput(f"batch_size {rec.batch_size}: mixup needs full batches, but the {dataset} "
                       f"train split has {len(train_set)} images")
    num_classes = NUM_CLASSES[dataset]

    config = {"model": model, "space": space if model == "vit" else None, "arch": arch,
              "dataset": dataset, "recipe": recipe, **rec.as_dict(), "img_size": img_size,
              "seed": seed, "distill": None}
    teacher_net = None
    if teacher is not None:
        teacher_net, teacher_size, ident = load_teacher(teacher, teacher_arch, space, num_classes,
                                                        img_size, device)
        config["distill"] = {"mode": distill, "teacher": ident}
        if distill == "logit":
            config["distill"].update(alpha=float(distill_alpha), tau=float(distill_tau))
            if teacher_size != img_size and ident["model"] == "vit":
                raise BadInput(f"--teacher: a ViT teacher trained at {teacher_size} px, the student "
                               f"at {img_size} px (expected the same size)")
    student_blocks = []
    if distill == "inter":
        if model != "vit" or ident["model"] != "resnet56":
            raise BadInput("--distill inter: expected a ViT student and a resnet56 teacher checkpoint")
        probe = build_network(model, space, arch, num_classes, img_size)
        blocks = feature_blocks(space, arch, len(transformer_blocks(probe)), distill_blocks)
        config["distill"]["blocks"] = blocks
    elif distill_blocks is not None:
        raise BadInput("--distill-blocks: only with --distill inter")

    out = Path(out_dir)
    ckpt_path, log_path = out / CHECKPOINT, out / LOG
    saved = None
    if resume:
        if not ckpt_path.is_file():
            raise BadInput(f"--resume: no checkpoint at {ckpt_path}")
        saved = _load(ckpt_path, "--resume")
        if not isinstance(saved, dict) or not {"config", "model", "epoch", "log"} <= set(saved):
            raise BadInput(f"--resume {ckpt_path}: not a checkpoint of this trainer")
        _check_settings(saved["config"], config, ckpt_path)
    elif ckpt_path.exists():
        raise BadInput(f"--out {out}: already holds {CHECKPOINT} (pass --resume or use a new --out)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. a regular file in the way
        raise BadInput(f"--out {out}: cannot create directory ({exc.strerror})") from None

    _seed_all(seed)
    loader_gen = torch.Generator().manual_seed(seed)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=rec.batch_size, shuffle=True,
                                               num_workers=workers, generator=loader_gen,
                                               drop_last=rec.mixing)
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=rec.batch_size, num_workers=workers)
    net = build_network(model, space, arch, num_classes, img_size, device)
    blocks_of_net = transformer_blocks(net) if model == "vit" else []
    set_drop_path(net, blocks_of_net, rec.drop_path)
    net = net.to(device)
    ema = make_ema(rec, net)  # a copy made before any hook is attached
    trainable = [net]
    distiller = None
    if distill == "inter":
        dims = [blocks_of_net[i].mlp.fc2.out_features for i in blocks]
        distiller = InterDistiller(teacher_net, teacher_size, blocks, dims).to(device)
        distiller.attach(blocks_of_net)
        trainable.append(distiller)
    optimizer = make_optimizer(rec, trainable)
    steps = len(train_loader)
    scheduler = make_scheduler(rec, optimizer, steps)
    mixup, criterion = make_mixup(rec, num_classes), make_criterion(rec)
    autocast, scaler = _amp(device)

    log, start = [], 0
    if saved is not None:
        net.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        if ema is not None:
            ema.load_state_dict(saved["ema"])
        if distiller is not None:
            distiller.load_state_dict(saved["distiller"])
        _set_rng_state(saved["rng"], loader_gen)
        log, start = list(saved["log"]), saved["epoch"]

    with tqdm(total=rec.epochs * steps, initial=start * steps, disable=not progress,
              desc="train", dynamic_ncols=True) as bar:
        for epoch in range(start, rec.epochs):
            began = time.perf_counter()
            net.train()
            total_loss, seen, updates = 0.0, 0, epoch * steps
            lr = optimizer.param_groups[0]["lr"]
            for x, y in train_loader:
                x, y = x.to(device), y.to(device)
                target = y
                if mixup is not None:
                    x, target = mixup(x, y)
                with autocast():
                    logits = net(x)
                    loss = criterion(logits, target)
                    if distill == "logit":
                        with torch.no_grad():
                            t_in = x if teacher_size == img_size else F.interpolate(
                                x, size=teacher_size, mode="bilinear", antialias=True, align_corners=False)
                            teacher_logits = teacher_net(t_in)
                        loss = logit_loss(logits, loss, teacher_logits, distill_alpha, distill_tau)
                    elif distiller is not None:
                        loss = loss + distiller.loss(x)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                updates += 1
                scheduler.step_update(num_updates=updates)
                if ema is not None:
                    ema.update(net, step=updates)
                total_loss += float(loss.detach()) * len(y)
                seen += len(y)
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{total_loss / seen:.3f}")
            scheduler.step(epoch + 1)
            entry = {"epoch": epoch + 1, "train_loss": total_loss / seen,
                     "test_top1": evaluate(net, test_loader, device, autocast), "lr": lr}
            if ema is not None:
                entry["ema_top1"] = evaluate(ema.module, test_loader, device, autocast)
            entry["seconds"] = time.perf_counter() - began
            log.append(entry)
            state = {"config": config, "epoch": epoch + 1, "log": log, "model": net.state_dict(),
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "scaler": scaler.state_dict(), "rng": _rng_state(loader_gen)}
            if ema is not None:
                state["ema"] = ema.state_dict()
            if distiller is not None:
                state["distiller"] = distiller.state_dict()
            torch_save_atomic(state, ckpt_path)
            write_json_atomic(log_path, {"config": config, "epochs": log})
            if progress:
                bar.write(f"epoch {epoch + 1}/{rec.epochs}: loss {entry['train_loss']:.4f}, "
                          f"top-1 {entry['test_top1']:.2f}%"
                          + (f", EMA top-1 {entry['ema_top1']:.2f}%" if ema is not None else ""))
    write_json_atomic(log_path, {"config": config, "epochs": log})  # also when resuming a finished run
    return {"best_top1": max(e["test_top1"] for e in log), "final_top1": log[-1]["test_top1"],
            "epochs": log, "checkpoint": str(ckpt_path), "log": str(log_path)}
