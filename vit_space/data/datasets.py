"""Image data sets read through torchvision.datasets from the user's ``--data-root``, never downloaded.

CIFAR-100 is torchvision's ``CIFAR100``, Flowers-102 its ``Flowers102``, ImageNet its ``ImageFolder``
(the train/ and val/ folders torchvision's ``ImageNet`` also reads, without its devkit step), and
Chaoyang, which torchvision lacks, a small ``VisionDataset`` of our own. Images go through timm's
``create_transform`` (vit_space/train/recipes.py builds the train one; ``eval_transform`` is timm's eval
transform). The layout is checked before torchvision is called, so a missing or malformed root is
one ``BadInput`` line naming the file and the layout expected, not torchvision's generic message.

torchvision verifies the CIFAR-100 and Flowers-102 files against the md5 of the official release
and has no switch to skip it, which would refuse every re-saved or generated file (the tests'
fixtures): the two subclasses below set those md5s to None, which torchvision's own
``check_integrity`` reads as "the file exists". Flowers102 also wants its files under
``flowers-102/``; the subclass points it at the folder that holds them, so both that layout and the
authors' flat one (jpg/, imagelabels.mat, setid.mat directly in the data set's folder) are read.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import torch
from scipy.io.matlab import MatReadError
from timm.data import create_transform
from torchvision.datasets import CIFAR100, Flowers102, ImageFolder, VisionDataset
from torchvision.datasets.folder import default_loader

from vit_space.core.errors import BadInput

NUM_CLASSES = {"c100": 100, "flowers": 102, "chaoyang": 4, "imagenet": 1000}

# what torchvision or the data set's code raises for unreadable files: pickle, scipy.io, json
_READ_ERRORS = (OSError, ValueError, KeyError, IndexError, TypeError, EOFError, AttributeError,
                RuntimeError, pickle.UnpicklingError, MatReadError)


def _need(root: Path, rel: str, expected: str, folder: bool = False) -> Path:
    path = root / rel
    if not (path.is_dir() if folder else path.is_file()):
        what = f"{rel}/ directory" if folder else rel
        raise BadInput(f"--data-root {root}: no {what} (expected {expected})")
    return path


def _pick_split(split: str, table: dict, name: str):
    if split not in table:
        raise BadInput(f"--split {split!r}: unknown for {name} (expected one of {', '.join(table)})")
    return table[split]


def _check_labels(labels, n_classes: int, where: str) -> list:
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise BadInput(f"{where}: labels must lie in [0, {n_classes}), got {labels.min()}..{labels.max()}")
    return labels.tolist()


def load_image(path):
    """torchvision's default loader; an unreadable image is one line naming the file."""
    try:
        return default_loader(path)
    except (OSError, ValueError) as exc:  # missing, truncated or not an image
        raise BadInput(f"{path}: cannot read image ({exc})") from None


class CifarFiles(CIFAR100):
    """torchvision's CIFAR100 with the release md5s dropped (see the module docstring)."""
    train_list = [[name, None] for name, _ in CIFAR100.train_list]
    test_list = [[name, None] for name, _ in CIFAR100.test_list]
    meta = {**CIFAR100.meta, "md5": None}


class FlowersFiles(Flowers102):
    """torchvision's Flowers102 with the release md5s dropped and the files read from ``root``
    itself (see the module docstring); the layout was checked before."""
    _file_dict = {k: (name, None) for k, (name, _) in Flowers102._file_dict.items()}

    def _check_integrity(self):
        self._base_folder = Path(self.root)
        self._images_folder = self._base_folder / "jpg"
        return super()._check_integrity()

    @property
    def targets(self) -> list:
        return list(self._labels)

    def files(self) -> list:
        return list(self._image_files)


class Chaoyang(VisionDataset):
    """Chaoyang (colon pathology, 4 classes) as released: train.json / test.json, each a list of
    {"name": path relative to the root, "label": int}, and the images they list."""

    EXPECTED = "Chaoyang: train.json, test.json and the images they list"

    def __init__(self, root, split="train", transform=None, loader=load_image):
        super().__init__(root, transform=transform)
        fname = _pick_split(split, {"train": "train.json", "test": "test.json"}, "chaoyang")
        path = _need(Path(root), fname, self.EXPECTED)
        try:
            entries = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadInput(f"{path}: malformed JSON ({exc})") from None
        if not isinstance(entries, list):
            raise BadInput(f"{path}: expected a JSON list of {{\"name\", \"label\"}} objects")
        self.samples, self.loader = [], loader
        for k, e in enumerate(entries):
            ok = (isinstance(e, dict) and isinstance(e.get("name"), str)
                  and isinstance(e.get("label"), int) and not isinstance(e.get("label"), bool))
            if not ok:
                raise BadInput(f"{path}: entry {k} must be {{\"name\": str, \"label\": int}}, got {e!r}")
            self.samples.append((Path(root) / e["name"], e["label"]))
        self.targets = _check_labels([s[1] for s in self.samples], 4, f"{path} field 'label'")

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        img = self.loader(path)
        return (self.transform(img) if self.transform else img), label

    def files(self) -> list:
        return [s[0] for s in self.samples]


def _open_cifar(root: Path, split: str, transform):
    train = _pick_split(split, {"train": True, "test": False}, "c100")
    for name in ("train", "test", "meta"):
        _need(root, f"cifar-100-python/{name}", "the CIFAR-100 python pickles")
    return CifarFiles(root, train=train, transform=transform, download=False)


def _open_flowers(root: Path, split: str, transform):
    """Splits: torchvision's train (trnid), val (valid), test (tstid), and trainval = both."""
    parts = _pick_split(split, {"train": ["train"], "val": ["val"], "test": ["test"],
                                "trainval": ["train", "val"]}, "flowers")
    folder = root / "flowers-102" if (root / "flowers-102").is_dir() else root
    expected = "Flowers-102: jpg/, imagelabels.mat, setid.mat, directly or under flowers-102/"
    _need(folder, "jpg", expected, folder=True)
    for name in ("imagelabels.mat", "setid.mat"):
        _need(folder, name, expected)
    sets = [FlowersFiles(folder, split=p, transform=transform, loader=load_image) for p in parts]
    return sets[0] if len(sets) == 1 else torch.utils.data.ConcatDataset(sets)


def _open_imagenet(root: Path, split: str, transform):
    """ImageFolder over train/ or val/ (class index = sorted wnid); ImageNet has no public test labels."""
    sub = _pick_split(split, {"train": "train", "val": "val", "test": "val"}, "imagenet")
    _need(root, sub, f"ImageFolder layout {sub}/<class_dir>/*.JPEG", folder=True)
    return ImageFolder(root / sub, transform=transform, loader=load_image)


OPENERS = {"c100": _open_cifar, "flowers": _open_flowers, "chaoyang": Chaoyang,
           "imagenet": _open_imagenet}


def targets(ds) -> list:
    """The labels of a data set built here, in item order, without decoding any image."""
    if isinstance(ds, torch.utils.data.ConcatDataset):
        return [y for part in ds.datasets for y in targets(part)]
    return list(ds.targets)


def _files(ds) -> list:
    if isinstance(ds, torch.utils.data.ConcatDataset):
        return [f for part in ds.datasets for f in _files(part)]
    return ds.files() if hasattr(ds, "files") else []


def eval_transform(img_size: int):
    """timm's eval transform (resize to img_size / 0.875, centre crop, ImageNet normalisation)."""
    return create_transform(img_size, is_training=False)


def open_dataset(name: str, root, split: str = "train", transform=None):
    """One split of a data set on disk through torchvision, its layout and labels checked now
    rather than mid-run; ``transform`` defaults to timm's eval transform at 224 px."""
    if name not in OPENERS:
        raise BadInput(f"--dataset {name!r}: unknown (expected one of {', '.join(sorted(OPENERS))})")
    root = Path(root)
    if not root.is_dir():
        raise BadInput(f"--data-root {root}: directory not found")
    try:
        ds = OPENERS[name](root, split, eval_transform(224) if transform is None else transform)
    except BadInput:
        raise
    except _READ_ERRORS as exc:  # torchvision, pickle or scipy.io on a malformed file
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise BadInput(f"--data-root {root}: not a readable {name} data set "
                       f"({type(exc).__name__}: {detail})") from None
    _check_labels(targets(ds), NUM_CLASSES[name], f"--data-root {root}: {name} {split} labels")
    for path in _files(ds):
        if not Path(path).is_file():
            raise BadInput(f"--data-root {root}: no {Path(path).relative_to(root)} (listed in the "
                           f"{name} {split} split)")
    if len(ds) == 0:
        raise BadInput(f"--data-root {root}: the {name} {split} split has no images")
    return ds


def load_real_batch(name, root, batch_size, img_size, seed):
    """One reproducible proxy batch from the train split, through timm's eval transform: indices
    from default_rng(seed), without replacement."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BadInput(f"batch size {batch_size!r}: expected a positive integer")
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1:
        raise BadInput(f"img_size {img_size!r}: expected a positive integer")
    ds = open_dataset(name, root, split="train", transform=eval_transform(img_size))
    if batch_size > len(ds):
        raise BadInput(f"--data-root {root}: batch size {batch_size} exceeds the {len(ds)} images "
                       f"in the {name} train split")
    idx = np.random.default_rng(seed).choice(len(ds), size=batch_size, replace=False)
    items = [ds[int(i)] for i in idx]
    return (torch.stack([it[0] for it in items]),
            torch.tensor([it[1] for it in items], dtype=torch.int64))
