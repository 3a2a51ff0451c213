"""ViT-Bench-101: find it, load and validate it, and split it 60% / 40%.

The data are the authors': they are found in place (never copied into this repository). Both the
JSON conversion and the authors' original `gt_*.pth` lists are read; the latter only with
`torch.load(..., weights_only=True)`, which refuses anything but plain containers and numbers.
"""
from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from vit_space.core.errors import BadInput
from vit_space.data.spaces import get_space

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGED_BENCH = Path(__file__).resolve().parent / "bench"  # installed as package data
DATASETS = ("c100", "flowers", "chaoyang", "imagenet")
_COLUMN_PREFIX = {"c100": "c100", "flowers": "flower", "chaoyang": "chaoyang"}
SPACE_COLUMNS = {
    "autoformer": ("c100_base_acc", "c100_kd_acc", "flower_base_acc", "flower_kd_acc",
                   "chaoyang_base_acc", "chaoyang_kd_acc", "imagenet_super_acc"),
    "pit": ("c100_base_acc", "c100_kd_acc", "flower_base_acc", "flower_kd_acc",
            "chaoyang_base_acc", "chaoyang_kd_acc"),
}
SPLIT_FRACTION = 0.6
ACC_KINDS = ("kd", "base")


def column_for(dataset: str, acc: str = "kd", space: str = "autoformer") -> str:
    """Bench column holding `dataset`'s accuracy (imagenet has one column, AutoFormer only)."""
    if dataset not in DATASETS:
        raise BadInput(f"--datasets {dataset}: unknown data set (expected {', '.join(DATASETS)})")
    if acc not in ACC_KINDS:
        raise BadInput(f"--acc {acc}: expected one of {', '.join(ACC_KINDS)}")
    column = "imagenet_super_acc" if dataset == "imagenet" else f"{_COLUMN_PREFIX[dataset]}_{acc}_acc"
    if column not in SPACE_COLUMNS[space]:
        raise BadInput(f"--datasets {dataset}: the {space} bench has no {dataset} accuracy")
    return column


def parse_datasets(text: str, space: str) -> list:
    names = [d.strip() for d in text.split(",") if d.strip()]
    if not names:
        raise BadInput("--datasets: empty (expected e.g. c100,flowers,chaoyang)")
    for name in names:
        column_for(name, "kd", space)
    return names


@dataclass
class Bench:
    space: str
    path: str
    records: list

    def __len__(self) -> int:
        return len(self.records)

    def archs(self, indices) -> list:
        return [self.records[i]["arch"] for i in indices]

    def accuracies(self, indices, column: str) -> list:
        """Accuracies of `column` (None where unknown). A column with no known value at all in
        the chosen archs is a bad choice of data set or split, not a proxy's failure."""
        values = [self.records[i].get(column) for i in indices]
        if values and all(v is None for v in values):
            raise BadInput(f"{self.path}: column {column} has no known accuracy among the "
                           f"{len(values)} chosen archs (expected a column with values)")
        return values

    def head(self, n: Optional[int]) -> "Bench":
        """The first n records (for quick runs); splits are then made of those."""
        if n is None:
            return self
        if n < 4 or n > len(self.records):
            raise BadInput(f"--archs {n}: expected 4 to {len(self.records)} records")
        return Bench(self.space, self.path, self.records[:n])

    def split(self, name: str, seed: int = 0) -> list:
        """Record indices of the 'search' (alias 'val', 60%), 'test' (40%) or 'all' split."""
        order = list(range(len(self.records)))
        random.Random(seed).shuffle(order)
        cut = int(round(SPLIT_FRACTION * len(order)))
        parts = {"search": order[:cut], "val": order[:cut], "test": order[cut:], "all": order}
        if name not in parts:
            raise BadInput(f"--split {name}: expected one of val, search, test, all")
        return sorted(parts[name])


def find_bench(space: str, bench: Optional[str] = None) -> Path:
    """The bench file for `space`: --bench PATH (file or directory), else $VIT_BENCH_101, else the
    copy packaged with vit_space (PACKAGED_BENCH, the authors' files converted one to one)."""
    get_space(space)
    if bench:
        candidates, origin = [Path(bench)], f"--bench {bench}"
    elif os.environ.get("VIT_BENCH_101"):
        candidates, origin = [Path(os.environ["VIT_BENCH_101"])], f"$VIT_BENCH_101={os.environ['VIT_BENCH_101']}"
    else:
        candidates = [PACKAGED_BENCH]
        origin = f"the packaged bench {PACKAGED_BENCH} (give --bench PATH or set $VIT_BENCH_101)"
    for place in candidates:
        if place.is_file():
            return place
        for name in (f"{space}.json", f"gt_{space}.pth"):
            if (place / name).is_file():
                return place / name
    raise BadInput(f"{origin}: no {space}.json or gt_{space}.pth found")


def _read_records(path: Path):
    if path.suffix == ".pth":
        import pickle

        import torch
        try:
            return torch.load(path, weights_only=True, map_location="cpu")
        except pickle.UnpicklingError:
            raise BadInput(f"{path}: holds objects other than plain lists, dicts and numbers, which "
                           "are refused (loaded with weights_only=True)") from None
        except (RuntimeError, EOFError, ValueError) as exc:
            raise BadInput(f"{path}: not a readable .pth file ({type(exc).__name__})") from None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot be read ({exc})") from None


def _check_record(record, index: int, space: str, path: Path) -> dict:
    where = f"{path.name} record {index}"
    if not isinstance(record, dict):
        raise BadInput(f"{where}: expected an object with 'arch' and accuracy fields")
    if "arch" not in record:
        raise BadInput(f"{where}: missing field 'arch'")
    get_space(space).validate(record["arch"], where=f"{where} field arch")
    allowed = set(SPACE_COLUMNS[space]) | {"arch"}
    for key in record:
        if key not in allowed:
            raise BadInput(f"{where}: unknown field '{key}' (expected arch and "
                           f"{', '.join(SPACE_COLUMNS[space])})")
    for column in SPACE_COLUMNS[space]:
        value = record.get(column)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not 0.0 <= value <= 100.0:
            raise BadInput(f"{where} field {column}: {value!r} is not an accuracy in [0, 100] or null")
    return {"arch": record["arch"], **{c: record.get(c) for c in SPACE_COLUMNS[space]}}


def infer_space(path: Path) -> str:
    for space in SPACE_COLUMNS:
        if space in path.name.lower():
            return space
    raise BadInput(f"{path}: cannot tell the space from the file name (expected autoformer or pit in it)")


def load_bench(path, space: Optional[str] = None) -> Bench:
    """Read and validate a bench file; the first bad record is a one-line BadInput."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: bench file not found")
    space = space or infer_space(path)
    get_space(space)
    data = _read_records(path)
    if not isinstance(data, list) or not data:
        raise BadInput(f"{path}: expected a non-empty list of records, got {type(data).__name__}")
    records = [_check_record(r, i, space, path) for i, r in enumerate(data)]
    return Bench(space=space, path=str(path), records=records)


def open_bench(space: str, bench: Optional[str] = None, archs: Optional[int] = None) -> Bench:
    return load_bench(find_bench(space, bench), space).head(archs)
