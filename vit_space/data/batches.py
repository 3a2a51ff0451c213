"""The one batch a proxy sees: seeded synthetic by default, or read from a real data set.

No image data set can be downloaded where this project is developed, so the default is a seeded
batch of standard-normal images (what a normalised image batch looks like to a fresh network)
with uniform labels. `--data-root DIR` switches to real data: data set NAME is read from DIR/NAME
through torchvision (vit_space/data/datasets.py) with timm's eval transform, and a missing or malformed
one is an error, never a silent fallback.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

import torch

from vit_space.core.errors import BadInput
from vit_space.data.datasets import NUM_CLASSES, load_real_batch


def _seed_for(dataset: str, seed: int) -> int:
    return int(hashlib.sha256(f"batch|{dataset}|{seed}".encode()).hexdigest()[:8], 16)


def synthetic_batch(dataset: str, batch_size: int, img_size: int, seed: int):
    """Gaussian images and uniform labels in [0, num_classes), identical for identical arguments."""
    gen = torch.Generator().manual_seed(_seed_for(dataset, seed))
    images = torch.randn(batch_size, 3, img_size, img_size, generator=gen)
    labels = torch.randint(0, NUM_CLASSES[dataset], (batch_size,), generator=gen)
    return images, labels


def make_batch(dataset: str, batch_size: int, img_size: int, seed: int,
               data_root: Optional[str] = None):
    if dataset not in NUM_CLASSES:
        raise BadInput(f"--datasets {dataset}: unknown data set (expected {', '.join(NUM_CLASSES)})")
    if batch_size < 1 or img_size < 16:
        raise BadInput(f"--batch-size {batch_size} / --img-size {img_size}: expected a batch of at "
                       "least 1 and images of at least 16 pixels (one patch)")
    if data_root is None:
        return synthetic_batch(dataset, batch_size, img_size, seed)
    root = Path(data_root)
    if not root.is_dir():
        raise BadInput(f"--data-root {data_root}: directory not found")
    return load_real_batch(dataset, str(root / dataset), batch_size, img_size, seed)
