"""Train one ViT of a search space from scratch (optionally distilled from a teacher), resumably.

The recipe is the DeiT/AutoFormer one cut to its core: AdamW, per-step linear warmup then cosine
decay, label smoothing, random-resized-crop + flip, top-1 on the test split after every epoch.

Resuming must give the same weights as never stopping, so a checkpoint holds everything that
changes the math from here on: model, optimizer, scheduler, the RNG states (global torch RNG drives
augmentation; the loader's own generator drives shuffling) and the settings, which a resume must
match. Checkpoints hold only tensors and plain containers, so they load with weights_only=True.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from vit_space.atomic import torch_save_atomic, write_json_atomic
from vit_space.datasets import NUM_CLASSES, open_dataset
from vit_space.errors import BadInput
from vit_space.models import build_model
from vit_space.setup_run import resolve_device
from vit_space.spaces import get_space

CHECKPOINT = "checkpoint.pt"
LOG = "log.json"


def load_arch_file(space: str, path, flag: str = "--arch") -> dict:
    """Read {"arch": {...}} or a bare arch dict from JSON and validate it against the space."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BadInput(f"{flag} {path}: file not found") from None
    except (OSError, ValueError) as exc:
        raise BadInput(f"{flag} {path}: not a readable JSON file ({exc})") from None
    if isinstance(data, dict) and "arch" in data:
        data = data["arch"]
    return get_space(space).validate(data, where=f"{flag} {path}: arch")


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the base lr: linear warmup to 1, then half a cosine down to 0 at the last step."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def distillation_loss(logits, labels, teacher_logits, alpha, tau, label_smoothing):
    """(1-alpha) * CE(labels) + alpha * tau^2 * KL(teacher/tau || student/tau); tau^2 keeps the soft
    term's gradient scale independent of tau (Hinton et al.). Without a teacher it is the CE."""
    ce = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    if teacher_logits is None:
        return ce
    kl = F.kl_div(F.log_softmax(logits / tau, dim=-1), F.log_softmax(teacher_logits / tau, dim=-1),
                  reduction="batchmean", log_target=True)
    return (1 - alpha) * ce + alpha * tau * tau * kl


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


def _load_teacher(space, teacher, teacher_arch, num_classes, img_size, device):
    """Build the teacher from a trainer checkpoint (its arch is inside) or a bare state dict (needs
    teacher_arch); either may be given as a path or as the loaded dict."""
    obj = _load(teacher, "--teacher") if isinstance(teacher, (str, Path)) else teacher
    if not isinstance(obj, dict):
        raise BadInput(f"--teacher: expected a checkpoint or a state dict, got {type(obj).__name__}")
    state, arch = obj, teacher_arch
    if isinstance(obj.get("model"), dict):  # a checkpoint of this trainer
        state = obj["model"]
        saved = obj.get("config", {}).get("arch")
        if arch is not None and saved is not None and arch != saved:
            raise BadInput("--teacher-arch: differs from the arch stored in the teacher checkpoint")
        arch = arch if arch is not None else saved
    if arch is None:
        raise BadInput("--teacher: a bare state dict needs --teacher-arch")
    model = build_model(space, arch, num_classes, img_size)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        detail = str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else type(exc).__name__
        raise BadInput(f"--teacher: weights do not fit the teacher arch at img_size {img_size} "
                       f"with {num_classes} classes ({detail})") from None
    return model.to(device).eval(), {"arch": arch, "sha256": _digest(state)}


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
    """Reject nonsense hyperparameters up front; each entry is (value, lowest allowed, integer?)."""
    for name, (value, low, integer) in values.items():
        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind) or not value >= low:
            raise BadInput(f"{name} {value!r}: expected {'an integer' if integer else 'a number'} >= {low}")


def _rng_state(loader_gen) -> dict:
    return {"torch": torch.get_rng_state(), "loader": loader_gen.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(state: dict, loader_gen) -> None:
    torch.set_rng_state(state["torch"])
    loader_gen.set_state(state["loader"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


@torch.no_grad()
def evaluate(model, loader, device) -> float:
    """Top-1 accuracy in percent."""
    model.eval()
    correct = total = 0
    for x, y in loader:
        pred = model(x.to(device)).argmax(dim=-1)
        correct += int((pred.cpu() == y).sum())
        total += len(y)
    return 100.0 * correct / total


def train(space, arch, dataset, data_root, out_dir, epochs, batch_size, lr, weight_decay,
          warmup_epochs, label_smoothing, img_size, seed, device, resume, teacher=None,
          distill_alpha=0.5, distill_tau=1.0, workers=0, progress=True, teacher_arch=None) -> dict:
    """Train `arch` on `dataset`, checkpointing to out_dir every epoch; returns the log summary.

    Deterministic given seed and the same number of workers (workers draw their own augmentation
    seeds). An interrupted run resumed with the same settings ends with the same weights.
    """
    _check_numbers(epochs=(epochs, 1, True), batch_size=(batch_size, 1, True), lr=(lr, 0, False),
                   weight_decay=(weight_decay, 0, False), warmup_epochs=(warmup_epochs, 0, True),
                   label_smoothing=(label_smoothing, 0, False), seed=(seed, 0, True),
                   workers=(workers, 0, True), distill_alpha=(distill_alpha, 0, False),
                   distill_tau=(distill_tau, 0, False))
    if label_smoothing >= 1 or distill_alpha > 1 or distill_tau == 0:
        raise BadInput("expected label_smoothing < 1, distill_alpha <= 1 and distill_tau > 0")
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 16 or img_size % 16:
        raise BadInput(f"--img-size {img_size!r}: expected a multiple of 16 (the patch size)")
    device = resolve_device(device)
    get_space(space).validate(arch)
    train_set = open_dataset(dataset, data_root, "train", img_size, train_augment=True)
    test_set = open_dataset(dataset, data_root, "test", img_size, train_augment=False)
    num_classes = NUM_CLASSES[dataset]
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. a regular file in the way
        raise BadInput(f"--out {out}: cannot create directory ({exc.strerror})") from None
    ckpt_path, log_path = out / CHECKPOINT, out / LOG

    config = {"space": space, "arch": arch, "dataset": dataset, "epochs": epochs,
              "batch_size": batch_size, "lr": float(lr), "weight_decay": float(weight_decay),
              "warmup_epochs": warmup_epochs, "label_smoothing": float(label_smoothing),
              "img_size": img_size, "seed": seed, "teacher": None}
    teacher_model = None
    if teacher is None and teacher_arch is not None:
        raise BadInput("--teacher-arch: given without --teacher")
    if teacher is not None:
        teacher_model, ident = _load_teacher(space, teacher, teacher_arch, num_classes, img_size, device)
        config["teacher"] = {**ident, "alpha": float(distill_alpha), "tau": float(distill_tau)}

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

    torch.manual_seed(seed)
    loader_gen = torch.Generator().manual_seed(seed)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True,
                                               num_workers=workers, generator=loader_gen)
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=batch_size, num_workers=workers,
                                              generator=torch.Generator().manual_seed(0))
    model = build_model(space, arch, num_classes, img_size).to(device)
    # no weight decay on biases, norms, position embedding and class token, as timm/DeiT do
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name in ("pos_embed", "cls_token") else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    steps = len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup_epochs * steps, epochs * steps))

    log, start = [], 0
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        _set_rng_state(saved["rng"], loader_gen)
        log, start = list(saved["log"]), saved["epoch"]

    with tqdm(total=epochs * steps, initial=start * steps, disable=not progress,
              desc="train", dynamic_ncols=True) as bar:
        for epoch in range(start, epochs):
            began = time.perf_counter()
            model.train()
            total_loss, seen = 0.0, 0
            for x, y in train_loader:
                x, y = x.to(device), y.to(device)
                teacher_logits = None
                if teacher_model is not None:
                    with torch.no_grad():
                        teacher_logits = teacher_model(x)
                loss = distillation_loss(model(x), y, teacher_logits, distill_alpha, distill_tau,
                                         label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                last_lr = optimizer.param_groups[0]["lr"]
                scheduler.step()
                total_loss += float(loss.detach()) * len(y)
                seen += len(y)
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{total_loss / seen:.3f}")
            top1 = evaluate(model, test_loader, device)
            log.append({"epoch": epoch + 1, "train_loss": total_loss / seen, "test_top1": top1,
                        "lr": last_lr, "seconds": time.perf_counter() - began})
            torch_save_atomic({"config": config, "epoch": epoch + 1, "log": log,
                          "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "rng": _rng_state(loader_gen)},
                         ckpt_path)
            write_json_atomic(log_path, {"config": config, "epochs": log})
            if progress:
                bar.write(f"epoch {epoch + 1}/{epochs}: loss {log[-1]['train_loss']:.4f}, "
                          f"top-1 {top1:.2f}%")
    write_json_atomic(log_path, {"config": config, "epochs": log})  # also when resuming a finished run
    return {"best_top1": max(e["test_top1"] for e in log), "final_top1": log[-1]["test_top1"],
            "epochs": log, "checkpoint": str(ckpt_path), "log": str(log_path)}
