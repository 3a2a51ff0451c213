"""Training recipes, registered by name, and the timm factories that turn one into parts.

A recipe is plain data (``Recipe``); everything it drives comes from timm: the train transform
(``create_transform``), the optimizer (``create_optimizer_v2`` over ``param_groups_weight_decay``),
the schedule (``create_scheduler_v2``), Mixup/CutMix with ``SoftTargetCrossEntropy`` and the EMA
(``ModelEmaV3``). Where each recipe's values come from is in docs/search-and-training.md ("Training").
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Optional

import torch
from timm.data import Mixup, create_transform
from timm.layers import DropPath
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2, param_groups_weight_decay
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3

from vit_space.core.errors import BadInput


@dataclass(frozen=True)
class Recipe:
    epochs: int = 300
    batch_size: int = 128
    opt: str = "adamw"
    lr: float = 5e-4
    min_lr: float = 5e-6
    warmup_lr: float = 5e-7
    warmup_epochs: int = 20
    weight_decay: float = 0.05
    sched: str = "cosine"
    drop_path: float = 0.1
    label_smoothing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    aa: Optional[str] = "rand-m9-mstd0.5-inc1"
    interpolation: str = "bicubic"
    hflip: float = 0.5
    color_jitter: float = 0.4
    reprob: float = 0.0
    remode: str = "pixel"
    ema_decay: float = 0.0  # 0 = no EMA

    def override(self, **values) -> "Recipe":
        """A copy with the given fields replaced (None = keep), checked."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise BadInput(f"recipe: unknown setting {unknown[0]!r} (expected one of {', '.join(sorted(names))})")
        return replace(self, **{k: v for k, v in values.items() if v is not None}).validate()

    def validate(self) -> "Recipe":
        ints = {"epochs": 1, "batch_size": 1, "warmup_epochs": 0}
        for name, low in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise BadInput(f"{name} {v!r}: expected an integer >= {low}")
        for name in ("lr", "min_lr", "warmup_lr", "weight_decay", "drop_path", "label_smoothing",
                     "mixup", "cutmix", "mixup_prob", "mixup_switch_prob", "hflip", "color_jitter",
                     "reprob", "ema_decay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise BadInput(f"{name} {v!r}: expected a number >= 0")
        for name, top, sign in (("drop_path", 1, "<"), ("label_smoothing", 1, "<"), ("ema_decay", 1, "<"),
                                ("mixup_prob", 1, "<="), ("mixup_switch_prob", 1, "<="),
                                ("hflip", 1, "<="), ("reprob", 1, "<=")):
            v = getattr(self, name)
            if v > top or (sign == "<" and v == top):
                raise BadInput(f"{name} {v!r}: expected a number {sign} {top}")
        if self.mixing and self.batch_size % 2:
            raise BadInput(f"batch_size {self.batch_size}: mixup/cutmix mix a batch with its mirror; "
                           "expected an even batch size")
        return self

    @property
    def mixing(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def as_dict(self) -> dict:
        return asdict(self)


RECIPES = {
    # ViT-Bench-101's own training (the authors' public pycls-based configs): see docs/search-and-training.md
    "bench": Recipe(),
    # DeiT (Touvron et al. 2021, facebookresearch/deit main.py defaults; lr 5e-4 x 1024 / 512)
    "deit": Recipe(epochs=300, batch_size=1024, lr=1e-3, min_lr=1e-5, warmup_lr=1e-6,
                   warmup_epochs=5, weight_decay=0.05, drop_path=0.1, label_smoothing=0.1,
                   mixup=0.8, cutmix=1.0, aa="rand-m9-mstd0.5-inc1", color_jitter=0.3,
                   reprob=0.25, remode="pixel", ema_decay=0.99996),
    # quick checks and tests: no augmentation beyond crop and flip, short, no warm-up
    "minimal": Recipe(epochs=2, batch_size=32, lr=1e-3, min_lr=1e-5, warmup_lr=1e-5, warmup_epochs=0,
                      drop_path=0.0, aa=None, interpolation="bilinear", color_jitter=0.0),
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise BadInput(f"--recipe {name!r}: unknown (expected one of {', '.join(RECIPES)})")
    return RECIPES[name]


def train_transform(recipe: Recipe, img_size: int):
    """timm's training transform: bicubic/bilinear random-resized-crop, flip, RandAugment,
    colour jitter (off when RandAugment is on, as in timm), random erasing, normalisation."""
    return create_transform(img_size, is_training=True, hflip=recipe.hflip, auto_augment=recipe.aa,
                            color_jitter=recipe.color_jitter, interpolation=recipe.interpolation,
                            re_prob=recipe.reprob, re_mode=recipe.remode)


def set_drop_path(model: torch.nn.Module, blocks: list, rate: float) -> None:
    """Stochastic depth as timm's ViTs set it (linearly 0 -> rate over the blocks), on built
    blocks: timm's ``DropPath`` in each Block's drop_path1/drop_path2 slots."""
    for i, block in enumerate(blocks):
        r = rate * i / max(1, len(blocks) - 1)
        if r > 0:
            block.drop_path1, block.drop_path2 = DropPath(r), DropPath(r)


def make_optimizer(recipe: Recipe, modules: list):
    """timm's optimizer over timm's weight-decay groups: no decay on biases, norms and the
    model's ``no_weight_decay()`` names (pos_embed, cls_token for our AutoFormer)."""
    groups = []
    for m in modules:
        skip = m.no_weight_decay() if hasattr(m, "no_weight_decay") else {"pos_embed", "cls_token"}
        groups += param_groups_weight_decay(m, recipe.weight_decay, no_weight_decay_list=skip)
    return create_optimizer_v2(groups, opt=recipe.opt, lr=recipe.lr, weight_decay=recipe.weight_decay)


def make_scheduler(recipe: Recipe, optimizer, updates_per_epoch: int):
    """timm's scheduler, stepped once per epoch (timm's and DeiT's default)."""
    scheduler, _ = create_scheduler_v2(optimizer, sched=recipe.sched, num_epochs=recipe.epochs,
                                       min_lr=recipe.min_lr, warmup_lr=recipe.warmup_lr,
                                       warmup_epochs=recipe.warmup_epochs,
                                       updates_per_epoch=updates_per_epoch)
    return scheduler


def make_mixup(recipe: Recipe, num_classes: int):
    """timm's Mixup/CutMix (label smoothing folded into its soft targets), or None."""
    if not recipe.mixing:
        return None
    return Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix, prob=recipe.mixup_prob,
                 switch_prob=recipe.mixup_switch_prob, mode="batch",
                 label_smoothing=recipe.label_smoothing, num_classes=num_classes)


def make_criterion(recipe: Recipe):
    """The loss timm's train.py picks: soft-target CE under mixup, else label-smoothed CE, else CE."""
    if recipe.mixing:
        return SoftTargetCrossEntropy()
    if recipe.label_smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=recipe.label_smoothing)
    return torch.nn.CrossEntropyLoss()


def make_ema(recipe: Recipe, model):
    return ModelEmaV3(model, decay=recipe.ema_decay) if recipe.ema_decay > 0 else None
