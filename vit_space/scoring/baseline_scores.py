"""Scores of the direct (model-based) baselines for bench archs, cached on disk.

A direct baseline needs the model and a forward/backward (GraSP a second-order one), so its score
per (baseline, arch, dataset, batch settings) is computed once and kept in a small joblib file.
Per (arch, dataset), all missing baselines share one model build and one SharedPass.
The statistics sketch settings (rows, tokens) do not affect direct baselines and are not in the key.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import joblib
import numpy as np

from vit_space.core.atomic import atomic_dump
from vit_space.data.batches import make_batch
from vit_space.data.datasets import NUM_CLASSES
from vit_space.data.spaces import arch_key
from vit_space.models.builders import build_model, random_stream
from vit_space.models.costs import ANALYTIC_BASELINES, arch_cost
from vit_space.scoring.baselines import score_baselines
from vit_space.stats.parallel import release_freed_memory, run_parallel

SCORES_VERSION = 2  # 2: CPU weights and batch from portable streams (as STATS_VERSION)


def _score_path(root: Path, name: str, space: str, arch: dict, dataset: str, cfg, scope: str,
                device: str = "cpu") -> Path:
    """Scores of models built on a GPU (other initial weights) go to baseline-v1-cuda/."""
    text = (f"v{SCORES_VERSION}|{name}|{space}|{arch_key(arch)}|{dataset}|{cfg.batch_size}|"
            f"{cfg.img_size}|{cfg.seed}|{cfg.data_root}|{scope}")
    return (root / f"baseline-v{SCORES_VERSION}{random_stream(device)}" / space / name
            / (hashlib.sha256(text.encode()).hexdigest()[:32] + ".joblib"))


def _score_item(root, names, space, arch, dataset, cfg, scope, device, threads) -> dict:
    """All missing baselines of one (arch, dataset): counts (params, flops) without a model, the
    rest from one model build and the fewest passes their definitions allow (score_baselines)."""
    import torch
    if threads:
        torch.set_num_threads(threads)
    classes = NUM_CLASSES[dataset]
    counted = [n for n in names if scope == "all" and n in ANALYTIC_BASELINES]
    out = {n: ANALYTIC_BASELINES[n](arch_cost(space, arch, cfg.img_size, classes)) for n in counted}
    rest = [n for n in names if n not in out]
    if rest:
        model = build_model(space, arch, classes, cfg.img_size, device)
        images, labels = make_batch(dataset, cfg.batch_size, cfg.img_size, cfg.seed, cfg.data_root)
        out.update(score_baselines(rest, model, images.to(device), labels.to(device), scope))
        release_freed_memory()
    for name in names:
        atomic_dump(float(out[name]), _score_path(root, name, space, arch, dataset, cfg, scope, device))
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
            missing = [n for n in names
                       if not _score_path(root, n, space, arch, dataset, cfg, scope, device).exists()]
            if missing:
                todo.append((root, missing, space, arch, dataset, cfg, scope, device, 1 if n_jobs != 1 else 0))
    run_parallel(_score_item, todo, n_jobs, backend, scheduler, "baseline scores", progress)
    return {name: {d: np.array([joblib.load(_score_path(root, name, space, a, d, cfg, scope, device))
                                for a in archs])
                   for d in datasets} for name in names}
