"""Distillation, registered by name: ``inter`` as ViT-Bench-101's kd columns were trained, ``logit``
as DeiT's soft distillation.

``inter``: the student's token features at three blocks are mapped by a learned linear layer to
the channels of the CIFAR ResNet-56 teacher's stages 1-3 and pulled to them by an L2 (mean
squared error) loss, weight 2.5, summed over the three pairs, added to the task loss; no logit
term. The teacher sees the batch resized to its own input size (32 px). Our choices where the
bench's description stops: the class token is dropped, the patch tokens are laid out on their
square grid, and the teacher's map is average-pooled (adaptively) to that grid.

Which student blocks: by default, AutoFormer blocks 0, depth // 2 and depth - 1 (0, 6, 11 at
depth 12, the bench's pairing; 0, 6, 12 and 0, 7, 13 at depths 13 and 14), and for PiT the last
block of each of its three stages (stage resolution falls as the teacher's does). ``blocks``
overrides it with three increasing indices into the student's blocks in forward order.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vit_space.core.errors import BadInput
from vit_space.models.teacher import STAGE_WIDTHS

INTER_WEIGHT = 2.5


def default_blocks(space: str, arch: dict) -> list:
    if space == "pit":
        return [sum(arch["depth"][:k + 1]) - 1 for k in range(len(arch["depth"]))]
    depth = arch["depth"]
    return [0, depth // 2, depth - 1]


def feature_blocks(space: str, arch: dict, n_blocks: int, blocks=None) -> list:
    """The student block index matched to each teacher stage, checked against the student."""
    chosen = default_blocks(space, arch) if blocks is None else list(blocks)
    ok = (len(chosen) == len(STAGE_WIDTHS) and all(isinstance(b, int) and 0 <= b < n_blocks for b in chosen)
          and all(a < b for a, b in zip(chosen, chosen[1:])))
    if not ok:
        raise BadInput(f"--distill-blocks {','.join(map(str, chosen))}: expected {len(STAGE_WIDTHS)} "
                       f"increasing block indices in 0..{n_blocks - 1} (one per teacher stage)")
    return chosen


class InterDistiller(nn.Module):
    """The linear maps (the trainable part, saved with the student) and the feature pairing."""

    def __init__(self, teacher, teacher_size: int, blocks: list, block_dims: list,
                 weight: float = INTER_WEIGHT):
        super().__init__()
        self.teacher, self.teacher_size, self.weight = [teacher], teacher_size, weight  # not a submodule
        self.maps = nn.ModuleList(nn.Linear(d, c) for d, c in zip(block_dims, STAGE_WIDTHS))
        self.blocks, self._feats = blocks, {}

    def attach(self, student_blocks: list) -> None:
        """Record the chosen blocks' outputs on every student forward."""
        for k, i in enumerate(self.blocks):
            student_blocks[i].register_forward_hook(lambda m, a, out, k=k: self._feats.__setitem__(k, out))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """After the student's forward on x: weight x sum of MSE(map(student tokens), teacher)."""
        with torch.no_grad():
            small = F.interpolate(x, size=self.teacher_size, mode="bilinear", antialias=True,
                                  align_corners=False)
            targets = self.teacher[0].stage_features(small)
        total = x.new_zeros(())
        for k, target in enumerate(targets):
            tokens = self._feats.pop(k)[:, 1:]  # drop the class token
            grid = math.isqrt(tokens.shape[1])
            mapped = self.maps[k](tokens[:, -grid * grid:]).transpose(1, 2)
            mapped = mapped.reshape(len(x), -1, grid, grid)
            total = total + F.mse_loss(mapped.float(), F.adaptive_avg_pool2d(target, grid).float())
        return self.weight * total


def logit_loss(logits, targets_loss, teacher_logits, alpha: float, tau: float):
    """DeiT's soft distillation: (1-alpha) * task loss + alpha * tau^2 * KL(teacher/tau || student/tau);
    tau^2 keeps the soft term's gradient scale independent of tau (Hinton et al.)."""
    kl = F.kl_div(F.log_softmax(logits / tau, dim=-1), F.log_softmax(teacher_logits / tau, dim=-1),
                  reduction="batchmean", log_target=True)
    return (1 - alpha) * targets_loss + alpha * tau * tau * kl


DISTILL_MODES = ("inter", "logit")
