"""Image data sets for proxy scoring, read from the on-disk layouts the Auto-Prox code uses.

Only data roots the user passes in (``--data-root``) are read; nothing is downloaded and
there is no fallback to synthetic data. Every bad root, file or field raises ``BadInput``
with a one-line message naming the culprit and the expected layout.
"""

import json
import os
import pickle
from pathlib import Path

import numpy as np
import scipy.io
import torch
from PIL import Image

from vit_space.errors import BadInput

NUM_CLASSES = {"c100": 100, "flowers": 102, "chaoyang": 4, "imagenet": 1000}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_IMAGE_EXTS = {".jpeg", ".jpg", ".png"}


def _need_file(root, rel, expected):
    """Path of ROOT/rel, or BadInput saying which file is missing and what layout was expected."""
    path = root / rel
    if not path.is_file():
        raise BadInput(f"--data-root {root}: no {rel} (expected {expected})")
    return path


def _need_dir(root, rel, expected):
    path = root / rel
    if not path.is_dir():
        raise BadInput(f"--data-root {root}: no {rel}/ directory (expected {expected})")
    return path


def _pick_split(split, table, name):
    """Look the split up in a reader's table so every reader rejects unknown splits the same way."""
    if split not in table:
        raise BadInput(f"--split {split!r}: unknown for {name} (expected one of {', '.join(table)})")
    return table[split]


def _check_labels(labels, n_classes, where):
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise BadInput(f"{where}: labels must lie in [0, {n_classes}), got {labels.min()}..{labels.max()}")
    return [int(v) for v in labels]


def _read_cifar100(root, split):
    """CIFAR-100 python pickles; images stay in memory as a uint8 N x 32 x 32 x 3 array.

    pickle is the data set's own distribution format; it is only ever read from the
    user-provided data root.
    """
    expected = "the CIFAR-100 python pickles"
    rel = "cifar-100-python/" + _pick_split(split, {"train": "train", "test": "test"}, "c100")
    path = _need_file(root, rel, expected)
    try:
        with open(path, "rb") as f:
            blob = pickle.load(f, encoding="bytes")
    except Exception as exc:  # any unpickling failure means the file is not a CIFAR pickle
        raise BadInput(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(blob, dict):
        raise BadInput(f"{path}: expected a pickled dict, got {type(blob).__name__}")

    def field(key):
        for k in (key.encode(), key):
            if k in blob:
                return blob[k]
        raise BadInput(f"{path}: missing field '{key}' (expected the CIFAR-100 python pickle)")

    data = np.asarray(field("data"))
    labels = np.asarray(field("fine_labels"))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise BadInput(f"{path}: field 'data' must be uint8 N x 3072, got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise BadInput(f"{path}: field 'fine_labels' must be {data.shape[0]} integers, got {labels.dtype} {labels.shape}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # RGB planes -> HWC view
    return images, _check_labels(labels, 100, f"{path} field 'fine_labels'")


def _loadmat(path, key):
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises assorted types for non-.mat bytes
        raise BadInput(f"{path}: not a readable .mat file ({type(exc).__name__}: {exc})") from None
    if key not in mat:
        raise BadInput(f"{path}: missing key '{key}'")
    values = np.asarray(mat[key]).ravel()
    if not np.issubdtype(values.dtype, np.number) or not np.all(values == np.round(values)):
        raise BadInput(f"{path}: key '{key}' must hold integers")
    return values.astype(np.int64)


def _read_flowers(root, split):
    """Oxford Flowers-102: jpg/image_NNNNN.jpg with 1-based labels and image ids in .mat files.

    Splits: 'train' = trnid, 'trainval' = trnid + valid, 'val' = valid, 'test' = tstid.
    """
    expected = "Flowers-102: jpg/, imagelabels.mat, setid.mat"
    keys = _pick_split(split, {"train": ["trnid"], "trainval": ["trnid", "valid"],
                               "val": ["valid"], "test": ["tstid"]}, "flowers")
    _need_dir(root, "jpg", expected)
    labels_path = _need_file(root, "imagelabels.mat", expected)
    setid_path = _need_file(root, "setid.mat", expected)
    all_labels = _loadmat(labels_path, "labels")
    ids = np.concatenate([_loadmat(setid_path, k) for k in keys])
    if ids.size and (ids.min() < 1 or ids.max() > all_labels.size):
        raise BadInput(f"{setid_path}: image ids must lie in 1..{all_labels.size} (the labels in {labels_path.name})")
    paths = [root / "jpg" / f"image_{i:05d}.jpg" for i in ids]
    for p in paths:
        if not p.is_file():
            raise BadInput(f"--data-root {root}: no {p.relative_to(root)} (listed in {setid_path.name})")
    return paths, _check_labels(all_labels[ids - 1] - 1, 102, f"{labels_path} key 'labels' (1-based)")


def _read_chaoyang(root, split):
    """Chaoyang: train.json / test.json, each a list of {"name": path relative to ROOT, "label": int}."""
    fname = _pick_split(split, {"train": "train.json", "test": "test.json"}, "chaoyang")
    path = _need_file(root, fname, "Chaoyang: train.json, test.json and the images they list")
    try:
        entries = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: malformed JSON ({exc})") from None
    if not isinstance(entries, list):
        raise BadInput(f"{path}: expected a JSON list of {{\"name\", \"label\"}} objects")
    paths, labels = [], []
    for k, e in enumerate(entries):
        ok = (isinstance(e, dict) and isinstance(e.get("name"), str)
              and isinstance(e.get("label"), int) and not isinstance(e.get("label"), bool))
        if not ok:
            raise BadInput(f"{path}: entry {k} must be {{\"name\": str, \"label\": int}}, got {e!r}")
        p = root / e["name"]
        if not p.is_file():
            raise BadInput(f"--data-root {root}: no {e['name']} (listed in {fname} entry {k})")
        paths.append(p)
        labels.append(e["label"])
    return paths, _check_labels(labels, 4, f"{path} field 'label'")


def _read_imagenet(root, split):
    """ImageFolder layout; class index = position of the class dir in the split's sorted dir list.

    Splits: 'train' reads train/, 'val' and 'test' read val/ (ImageNet has no public test labels).
    """
    sub = _pick_split(split, {"train": "train", "val": "val", "test": "val"}, "imagenet")
    top = _need_dir(root, sub, f"ImageFolder layout {sub}/<class_dir>/*.JPEG")
    classes = sorted(d.name for d in os.scandir(top) if d.is_dir())
    if not classes:
        raise BadInput(f"{top}: no class directories (expected {sub}/<class_dir>/*.JPEG)")
    paths, labels = [], []
    for idx, cls in enumerate(classes):
        files = sorted(f.name for f in os.scandir(top / cls)
                       if f.is_file() and os.path.splitext(f.name)[1].lower() in _IMAGE_EXTS)
        if not files:
            raise BadInput(f"{top / cls}: class directory has no .JPEG/.jpg/.png images")
        paths += [top / cls / f for f in files]
        labels += [idx] * len(files)
    return paths, _check_labels(labels, 1000, f"{top} (class directories)")


READERS = {
    "c100": _read_cifar100,
    "flowers": _read_flowers,
    "chaoyang": _read_chaoyang,
    "imagenet": _read_imagenet,
}


def _random_resized_crop(img):
    """Crop a random area (8-100% of the image, aspect 3/4-4/3), as in Inception/timm training.

    Draws from torch's global RNG so ``torch.manual_seed`` and DataLoader worker seeding apply.
    After 10 failed draws it keeps the whole image (torchvision would centre-crop instead);
    a deliberate simplification.
    """
    w, h = img.size
    for _ in range(10):
        area = w * h * float(torch.empty(1).uniform_(0.08, 1.0))
        log_ratio = float(torch.empty(1).uniform_(np.log(3 / 4), np.log(4 / 3)))
        cw = int(round(np.sqrt(area * np.exp(log_ratio))))
        ch = int(round(np.sqrt(area / np.exp(log_ratio))))
        if 0 < cw <= w and 0 < ch <= h:
            x0 = int(torch.randint(0, w - cw + 1, (1,)))
            y0 = int(torch.randint(0, h - ch + 1, (1,)))
            return img.crop((x0, y0, x0 + cw, y0 + ch))
    return img


class ImageDataset(torch.utils.data.Dataset):
    """(image, label) pairs; images are decoded only when an item is asked for.

    ``images`` is either a list of file paths or a uint8 N x H x W x 3 array (in-memory CIFAR).
    Items are float32 [3, img_size, img_size] normalised with ImageNet mean/std, and an int label.
    """

    def __init__(self, images, labels, img_size=224, train_augment=False, name=""):
        if len(images) != len(labels):
            raise BadInput(f"{name or 'dataset'}: {len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, list(labels)
        self.img_size, self.train_augment, self.name = img_size, train_augment, name
        self._mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self):
        return len(self.labels)

    def _pil(self, i):
        if isinstance(self.images, np.ndarray):
            return Image.fromarray(np.ascontiguousarray(self.images[i]), "RGB")
        path = self.images[i]
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except (OSError, ValueError) as exc:  # missing, truncated or not an image
            raise BadInput(f"{path}: cannot read image ({exc})") from None

    def __getitem__(self, i):
        img = self._pil(i)
        if self.train_augment:
            img = _random_resized_crop(img)
            if float(torch.rand(1)) < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
        img = img.resize((self.img_size, self.img_size), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return ((x - self._mean) / self._std).contiguous(), self.labels[i]


def open_dataset(name, root, split="train", img_size=224, train_augment=False):
    """List one split of a data set on disk, checking the layout now rather than mid-run."""
    if name not in READERS:
        raise BadInput(f"--dataset {name!r}: unknown (expected one of {', '.join(sorted(READERS))})")
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1:
        raise BadInput(f"img_size {img_size!r}: expected a positive integer")
    root = Path(root)
    if not root.is_dir():
        raise BadInput(f"--data-root {root}: directory not found")
    images, labels = READERS[name](root, split)
    if len(labels) == 0:
        raise BadInput(f"--data-root {root}: the {name} {split} split has no images")
    return ImageDataset(images, labels, img_size, train_augment, name=f"{name}:{split}")


def load_real_batch(name, root, batch_size, img_size, seed):
    """One reproducible batch from the train split: indices from default_rng(seed), no replacement."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BadInput(f"batch size {batch_size!r}: expected a positive integer")
    ds = open_dataset(name, root, split="train", img_size=img_size, train_augment=False)
    if batch_size > len(ds):
        raise BadInput(f"--data-root {root}: batch size {batch_size} exceeds the {len(ds)} images "
                       f"in the {name} train split")
    idx = np.random.default_rng(seed).choice(len(ds), size=batch_size, replace=False)
    items = [ds[int(i)] for i in idx]
    x = torch.stack([it[0] for it in items])
    y = torch.tensor([it[1] for it in items], dtype=torch.int64)
    return x, y
