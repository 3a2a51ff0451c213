"""Scores of the direct (model-based) baselines for bench archs, cached on disk.

A direct baseline needs the model and a forward/backward (GraSP a second-order one), so its score
per (baseline, arch, dataset, batch settings) is computed once and kept in a small joblib file.
The statistics sketch settings (rows, tokens) do not affect direct baselines and are not in the key.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import joblib
import numpy as np

from vit_space.baselines import BASELINES, shared_passes
from vit_space.batches import make_batch
from vit_space.atomic import atomic_dump
from vit_space.datasets import NUM_CLASSES
from vit_space.models import build_model
from vit_space.parallel import run_parallel
from vit_space.spaces import arch_key

SCORES_VERSION = 1


def _score_path(root: Path, name: str, space: str, arch: dict, dataset: str, cfg, scope: str) -> Path:
    text = (f"v{SCORES_VERSION}|{name}|{space}|{arch_key(arch)}|{dataset}|{cfg.batch_size}|"
            f"{cfg.img_size}|{cfg.seed}|{cfg.data_root}|{scope}")
    return root / f"baseline-v{SCORES_VERSION}" / space / name / (hashlib.sha256(text.encode()).hexdigest()[:32] + ".joblib")


def _score_item(root, names, space, arch, dataset, cfg, scope, device, threads) -> dict:
    """All missing baselines of one (arch, dataset): the model and batch are built once."""
    import torch
    if threads:
        torch.set_num_threads(threads)
    model = build_model(space, arch, NUM_CLASSES[dataset], cfg.img_size).to(device)
    images, labels = make_batch(dataset, cfg.batch_size, cfg.img_size, cfg.seed, cfg.data_root)
    images, labels = images.to(device), labels.to(device)
    out = {}
    with shared_passes():
        for name in names:
            value = float(BASELINES[name].fn(model, images, labels, scope=scope))
            atomic_dump(value, _score_path(root, name, space, arch, dataset, cfg, scope))
            out[name] = value
    return out


def baseline_scores(names: Sequence[str], space: str, archs: Sequence[dict],
                    datasets: Sequence[str], cfg, cache_root: Path, device: str = "cpu",
                    scope: str = "all", n_jobs: int = 1, backend: str = "loky", scheduler=None,
                    progress: bool = True) -> dict:
    """{name: {dataset: np.array of scores over archs}}, computing only what is not cached."""
    root = Path(cache_root)
    todo = []
    for dataset in datasets:
        for arch in archs:
            missing = [n for n in names if not _score_path(root, n, space, arch, dataset, cfg, scope).exists()]
            if missing:
                todo.append((root, missing, space, arch, dataset, cfg, scope, device, 1 if n_jobs != 1 else 0))
    run_parallel(_score_item, todo, n_jobs, backend, scheduler, "baseline scores", progress)
    return {name: {d: np.array([joblib.load(_score_path(root, name, space, a, d, cfg, scope)) for a in archs])
                   for d in datasets} for name in names}
