"""The CIFAR-style ResNet-56 that ViT-Bench-101's `kd` columns were distilled from.

Neither timm nor torchvision ships the CIFAR ResNets of He et al. (2016, section 4.2): a 3x3 stem
of 16 channels, three stages of n basic blocks at 16, 32 and 64 channels (strides 1, 2, 2),
global average pooling and a linear head, depth 6n + 2 (ResNet-56: n = 9), for 32 px inputs. The
blocks are timm's ``BasicBlock``; the shortcut where the shape changes is a 1x1 convolution with
batch norm (the paper's option B; its CIFAR runs used option A, zero-padded identity).
"""
from __future__ import annotations

import torch
from torch import nn
from timm.models.resnet import BasicBlock

STAGE_WIDTHS = (16, 32, 64)


class CifarResNet(nn.Module):
    def __init__(self, depth: int = 56, num_classes: int = 100):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth {depth}: expected 6n + 2")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU(inplace=True))
        stages, inplanes = [], 16
        for i, planes in enumerate(STAGE_WIDTHS):
            blocks = []
            for b in range(n):
                stride = 2 if i > 0 and b == 0 else 1
                down = None
                if stride != 1 or inplanes != planes:
                    down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                         nn.BatchNorm2d(planes))
                blocks.append(BasicBlock(inplanes, planes, stride, downsample=down))
                inplanes = planes
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(STAGE_WIDTHS[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def stage_features(self, x: torch.Tensor) -> list:
        """The output of each stage, (B, 16, H, W), (B, 32, H/2, W/2), (B, 64, H/4, W/4)."""
        feats, x = [], self.stem(x)
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage_features(x)[-1].mean(dim=(2, 3)))


def resnet56(num_classes: int) -> CifarResNet:
    return CifarResNet(56, num_classes)
