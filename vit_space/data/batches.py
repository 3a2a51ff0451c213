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

import numpy as np
import torch

from vit_space.core import portable_random
from vit_space.core.errors import BadInput
from vit_space.data.datasets import NUM_CLASSES, load_real_batch


def _seed_for(dataset: str, seed: int) -> int:
    return int(hashlib.sha256(f"batch|{dataset}|{seed}".encode()).hexdigest()[:8], 16)


def synthetic_batch(dataset: str, batch_size: int, img_size: int, seed: int):
    """Gaussian images and uniform labels in [0, num_classes), identical for identical arguments
    on any CPU (portable streams: torch's randn gives other bits under another instruction set)."""
    seed = _seed_for(dataset, seed)
    images = portable_random.normal(portable_random.generator(seed, "images"), (batch_size, 3, img_size, img_size))
    labels = portable_random.generator(seed, "labels").integers(0, NUM_CLASSES[dataset], batch_size)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


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
