"""Turn parsed data options into the objects the library works with (bench, config, cache)."""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Optional

import torch

from vit_space.core.errors import BadInput
from vit_space.data.bench import ACC_KINDS, Bench, open_bench, parse_datasets
from vit_space.stats.cache import StatsCache
from vit_space.stats.statistics import StatsConfig


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu" or name.startswith("cuda"):
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise BadInput(f"--device {name}: CUDA is not available here (expected auto or cpu)")
        return name
    raise BadInput(f"--device {name}: expected auto, cpu, cuda or cuda:N")


@dataclass
class DataSetup:
    bench: Bench
    datasets: list
    acc: str
    cfg: StatsConfig
    cache: StatsCache
    device: str
    n_jobs: int
    backend: str
    scheduler: Optional[str]
    progress: bool
    split_seed: int = 0  # the 60/40 split alone: many splits share one batch and statistics cache


_STATS = StatsConfig()
DATA_DEFAULTS = {
    "space": "autoformer", "bench": None, "datasets": "c100,flowers,chaoyang", "acc": "kd",
    "archs": None, "data_root": None, "batch_size": _STATS.batch_size, "img_size": _STATS.img_size,
    "seed": 0, "split_seed": None, "rows": _STATS.rows, "tokens": _STATS.tokens, "device": "auto", "cache": None,
    "jobs": 1, "backend": "loky", "scheduler": None, "quiet": False,
}


def make_setup(**options) -> DataSetup:
    """data_setup() from keyword options (the runners' data flags, with _ for -): for notebooks
    and scripts, e.g. make_setup(space="pit", archs=20, img_size=32)."""
    unknown = set(options) - set(DATA_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    return data_setup(SimpleNamespace(**{**DATA_DEFAULTS, **options}))


def data_setups(args) -> list:
    """One DataSetup per space of `--space a,b` (one tree searched on several spaces at once),
    each with the same data options; a single space gives a list of one."""
    spaces = [part.strip() for part in str(args.space).split(",")]
    if len(spaces) != len(set(spaces)) or not all(spaces):
        raise BadInput(f"--space {args.space}: expected one space or distinct spaces separated by commas")
    if len(spaces) > 1 and args.bench:
        raise BadInput(f"--bench {args.bench}: a bench file names one space (leave --bench out with --space {args.space})")
    return [data_setup(SimpleNamespace(**{**vars(args), "space": space})) for space in spaces]


def data_setup(args) -> DataSetup:
    bench = open_bench(args.space, args.bench, args.archs)
    datasets = parse_datasets(args.datasets, args.space)
    if args.acc not in ACC_KINDS:
        raise BadInput(f"--acc {args.acc}: expected one of {', '.join(ACC_KINDS)}")
    for flag, value, low in (("--batch-size", args.batch_size, 1), ("--img-size", args.img_size, 16),
                             ("--rows", args.rows, 0), ("--tokens", args.tokens, 0), ("--jobs", args.jobs, 1)):
        if value < low:
            raise BadInput(f"{flag} {value}: expected an integer >= {low}")
    if args.img_size % 16:
        raise BadInput(f"--img-size {args.img_size}: expected a multiple of 16 (the patch size)")
    cfg = StatsConfig(batch_size=args.batch_size, img_size=args.img_size, seed=args.seed,
                      data_root=args.data_root, rows=args.rows or None, tokens=args.tokens or None)
    device = resolve_device(args.device)
    if args.data_root:  # fail now, not after an hour of extraction
        from vit_space.data.batches import make_batch
        for d in datasets:
            make_batch(d, 1, args.img_size, args.seed, args.data_root)
    split_seed = getattr(args, "split_seed", None)
    return DataSetup(bench, datasets, args.acc, cfg, StatsCache(args.cache, device=device), device,
                     args.jobs, args.backend, args.scheduler, not args.quiet,
                     args.seed if split_seed is None else split_seed)
