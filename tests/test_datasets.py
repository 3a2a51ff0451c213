"""Tiny fixtures written in each data set's real on-disk layout, read back through torchvision.

Every image is one flat colour tied to its index, so a loaded tensor can be traced back to the
fixture image it came from and its label checked against the one written. Images go through
timm's eval transform at 32 px (resize, centre crop, normalise), which keeps a flat colour.
"""

import hashlib
import json
import pickle
import random

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, rand_augment_transform
from timm.data.auto_augment import RandAugment
from timm.data.random_erasing import RandomErasing
from timm.data.transforms import RandomResizedCropAndInterpolation
from torchvision.datasets import CIFAR100, Flowers102, ImageFolder, VisionDataset

from vit_space.core.errors import BadInput
from vit_space.data.batches import make_batch
from vit_space.data.datasets import (NUM_CLASSES, OPENERS, eval_transform, load_real_batch, open_dataset,
                                targets)
from vit_space.train.recipes import RECIPES, train_transform

S = 32  # img_size used throughout


def colour_of(k):
    """Distinct flat RGB colour for fixture image k (red channel steps by 20)."""
    return (10 + 20 * k, 255 - 20 * k, (37 * k) % 256)


def mean_rgb(x):
    """Undo the normalisation of a [3,H,W] tensor and return its mean colour in 0..255."""
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1)
    return ((x * std + mean) * 255).mean(dim=(1, 2)).numpy()


def which_image(x, n):
    """Index of the fixture colour closest to the colour of x."""
    dists = [np.abs(mean_rgb(x) - np.array(colour_of(k))).max() for k in range(n)]
    k = int(np.argmin(dists))
    assert dists[k] < 4, f"colour {mean_rgb(x)} matches no fixture image"
    return k


def save_flat(path, k, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.new("RGB", size, colour_of(k)).save(path, fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def opened(name, root, split="train"):
    return open_dataset(name, root, split, eval_transform(S))


# ---------- fixture writers (real formats) ----------

C100_TRAIN_LABELS = [(7 * k + 3) % 100 for k in range(10)]
C100_TEST_LABELS = [99, 0, 42, 5]


def _pickle(path, blob):
    with open(path, "wb") as f:
        pickle.dump(blob, f)


def write_cifar(root):
    """cifar-100-python/{train,test,meta}: the release's pickled dicts (data rows are RGB planes)."""
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    for split, labels, offset in (("train", C100_TRAIN_LABELS, 0), ("test", C100_TEST_LABELS, 10)):
        data = np.zeros((len(labels), 3072), np.uint8)
        for i in range(len(labels)):
            r, g, b = colour_of(offset + i) if offset + i < 12 else (1, 2, 3)
            data[i, :1024], data[i, 1024:2048], data[i, 2048:] = r, g, b
        _pickle(d / split, {"data": data, "fine_labels": labels, "coarse_labels": [0] * len(labels)})
    _pickle(d / "meta", {"fine_label_names": [f"class{i}" for i in range(100)],
                         "coarse_label_names": [f"super{i}" for i in range(20)]})
    return root


FLOWER_LABELS_1BASED = [5, 102, 1, 17, 44, 3, 99, 60]  # label of image_0000{k+1}.jpg
TRNID, VALID, TSTID = [3, 1, 6, 8], [2, 5], [4, 7]  # torchvision needs 2+ ids a split


def write_flowers(root):
    """The authors' flat layout: jpg/, imagelabels.mat, setid.mat directly in the root."""
    for k in range(len(FLOWER_LABELS_1BASED)):
        save_flat(root / "jpg" / f"image_{k + 1:05d}.jpg", k)
    scipy.io.savemat(root / "imagelabels.mat", {"labels": np.array([FLOWER_LABELS_1BASED], np.uint8)})
    scipy.io.savemat(root / "setid.mat", {"trnid": np.array([TRNID], np.uint16),
                                          "valid": np.array([VALID], np.uint16),
                                          "tstid": np.array([TSTID], np.uint16)})
    return root


def write_flowers_torchvision(root):
    """torchvision's layout: the same files under flowers-102/."""
    write_flowers(root / "flowers-102")
    return root


CHAOYANG = {"train": [("train/a.jpg", 2), ("train/b.jpg", 0), ("train/c.jpg", 3),
                      ("train/d.jpg", 1), ("train/e.jpg", 2), ("train/f.jpg", 0)],
            "test": [("test/x.jpg", 1), ("test/y.jpg", 3), ("test/z.jpg", 0)]}


def write_chaoyang(root):
    k = 0
    for split, entries in CHAOYANG.items():
        for name, _ in entries:
            save_flat(root / name, k)
            k += 1
        (root / f"{split}.json").write_text(json.dumps([{"name": n, "label": l} for n, l in entries]))
    return root


def write_imagenet(root):
    # created out of order on purpose: the class index must follow sorted names
    files = {"train": [("n09999999", "a.JPEG"), ("n01440764", "b.png"), ("n01440764", "c.jpg"),
                       ("n05555555", "d.JPEG"), ("n09999999", "e.jpg")],
             "val": [("n05555555", "v1.JPEG"), ("n01440764", "v2.JPEG"), ("n09999999", "v3.png")]}
    k = 0
    for split, items in files.items():
        for cls, fname in items:
            save_flat(root / split / cls / fname, k, size=(8, 8))
            k += 1
    (root / "train" / "n01440764" / "notes.txt").write_text("not an image")
    return root


WRITERS = {"c100": (write_cifar, 10), "flowers": (write_flowers, 4),
           "flowers-torchvision": (write_flowers_torchvision, 4), "chaoyang": (write_chaoyang, 6),
           "imagenet": (write_imagenet, 5)}


# ---------- happy paths ----------

def test_every_data_set_is_a_torchvision_dataset(tmp_path):
    assert set(OPENERS) == set(NUM_CLASSES) == {"c100", "flowers", "chaoyang", "imagenet"}
    kinds = {"c100": CIFAR100, "flowers": Flowers102, "chaoyang": VisionDataset, "imagenet": ImageFolder}
    for name, kind in kinds.items():
        ds = opened(name, WRITERS[name][0](tmp_path / name))
        assert isinstance(ds, kind), (name, type(ds))


def test_cifar_items(tmp_path):
    root = write_cifar(tmp_path)
    ds = opened("c100", root)
    assert len(ds) == 10 and targets(ds) == C100_TRAIN_LABELS
    for k in range(10):
        x, y = ds[k]
        assert x.shape == (3, S, S) and x.dtype == torch.float32 and y == C100_TRAIN_LABELS[k]
        np.testing.assert_allclose(mean_rgb(x), colour_of(k), atol=0.5)
    # the exact normalisation: image 0 has red 10 everywhere
    assert torch.allclose(ds[0][0][0], torch.full((S, S), (10 / 255 - 0.485) / 0.229), atol=1e-5)
    test = opened("c100", root, "test")
    assert [test[i][1] for i in range(4)] == C100_TEST_LABELS
    np.testing.assert_allclose(mean_rgb(test[1][0]), colour_of(11), atol=0.5)


def test_cifar_row_major_orientation(tmp_path):
    root = write_cifar(tmp_path)
    data = np.zeros((1, 3072), np.uint8)
    data[0, :512] = 255  # red plane, first 16 of 32 rows: top half red
    _pickle(root / "cifar-100-python" / "train", {"data": data, "fine_labels": [9]})
    x, y = opened("c100", root)[0]
    red = x[0] * IMAGENET_DEFAULT_STD[0] + IMAGENET_DEFAULT_MEAN[0]
    assert y == 9
    assert red[:6].min() > 0.99 and red[-6:].max() < 0.01  # top rows red, bottom rows black
    assert x[1].max() < -2 and x[2].max() < -1.8  # green and blue planes are zero


@pytest.mark.parametrize("layout", ["flowers", "flowers-torchvision"])
def test_flowers_splits_and_labels_in_both_layouts(tmp_path, layout):
    root = WRITERS[layout][0](tmp_path)
    ds = opened("flowers", root)
    assert targets(ds) == [FLOWER_LABELS_1BASED[i - 1] - 1 for i in TRNID] == [0, 4, 2, 59]
    x, y = ds[2]  # trnid[2] = 6 -> image_00006.jpg, label 3 (1-based) -> 2
    assert x.shape == (3, S, S) and y == 2 and which_image(x, 8) == 5
    assert targets(opened("flowers", root, "test")) == [16, 98]
    assert targets(opened("flowers", root, "val")) == [101, 43]
    trainval = opened("flowers", root, "trainval")
    assert targets(trainval) == [0, 4, 2, 59, 101, 43] and which_image(trainval[4][0], 8) == 1


def test_chaoyang_labels_and_paths(tmp_path):
    root = write_chaoyang(tmp_path)
    train = opened("chaoyang", root)
    assert targets(train) == [l for _, l in CHAOYANG["train"]]
    x, y = train[2]
    assert (x.shape, y, which_image(x, 9)) == ((3, S, S), 3, 2)
    x, y = opened("chaoyang", root, "test")[1]
    assert (y, which_image(x, 9)) == (3, 7)


def test_imagenet_sorted_class_index(tmp_path):
    root = write_imagenet(tmp_path)
    train = opened("imagenet", root)
    # n01440764 -> 0 (b.png, c.jpg), n05555555 -> 1 (d), n09999999 -> 2 (a, e); notes.txt skipped
    assert [p.rsplit("/", 1)[1] for p, _ in train.samples] == ["b.png", "c.jpg", "d.JPEG", "a.JPEG", "e.jpg"]
    assert targets(train) == [0, 0, 1, 2, 2]
    assert [which_image(train[i][0], 8) for i in range(5)] == [1, 2, 3, 0, 4]
    val = opened("imagenet", root, "val")
    assert targets(val) == [0, 1, 2] and opened("imagenet", root, "test").samples == val.samples


def test_real_batch_is_the_eval_transform_of_seeded_picks(tmp_path):
    root = write_chaoyang(tmp_path)
    x, y = load_real_batch("chaoyang", root, batch_size=4, img_size=S, seed=0)
    assert x.shape == (4, 3, S, S) and x.dtype == torch.float32 and y.dtype == torch.int64
    idx = np.random.default_rng(0).choice(6, size=4, replace=False)
    tf = eval_transform(S)
    for xi, i in zip(x, idx):
        with Image.open(root / CHAOYANG["train"][i][0]) as img:
            assert torch.equal(xi, tf(img.convert("RGB")))
    assert y.tolist() == [CHAOYANG["train"][i][1] for i in idx]


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_load_real_batch_deterministic(tmp_path, layout):
    writer, n = WRITERS[layout]
    name = layout.split("-")[0]
    root = writer(tmp_path)
    a = load_real_batch(name, root, batch_size=3, img_size=S, seed=7)
    b = load_real_batch(name, str(root), batch_size=3, img_size=S, seed=7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    labels = targets(opened(name, root))
    for seed in (7, 8):
        _, y = load_real_batch(name, root, batch_size=3, img_size=S, seed=seed)
        idx = np.random.default_rng(seed).choice(n, size=3, replace=False)
        assert y.tolist() == [labels[i] for i in idx]
    assert load_real_batch(name, root, batch_size=n, img_size=S, seed=0)[0].shape == (n, 3, S, S)


def test_different_seeds_pick_different_images(tmp_path):
    root = write_cifar(tmp_path)
    picks = [[which_image(xi, 10) for xi in load_real_batch("c100", root, 4, S, seed)[0]] for seed in (0, 1)]
    assert picks[0] != picks[1] and len(set(picks[0])) == 4  # no replacement


def test_train_transforms_are_timms(tmp_path):
    bench = train_transform(RECIPES["bench"], S).transforms
    rrc = next(t for t in bench if isinstance(t, RandomResizedCropAndInterpolation))
    assert rrc.size == (S, S) and "bicubic" in str(rrc.interpolation).lower()
    assert any(isinstance(t, RandAugment) for t in bench)
    assert not any(isinstance(t, RandomErasing) for t in bench)
    deit = train_transform(RECIPES["deit"], S).transforms
    assert any(isinstance(t, RandomErasing) and t.probability == 0.25 for t in deit)
    # seeded: the same draws give the same augmented tensors, and the crops vary
    root = write_chaoyang(tmp_path)
    ds = open_dataset("chaoyang", root, transform=train_transform(RECIPES["bench"], S))
    for seed in (torch.manual_seed, random.seed, np.random.seed):
        seed(0)
    first = [ds[0][0] for _ in range(6)]
    for seed in (torch.manual_seed, random.seed, np.random.seed):
        seed(0)
    assert all(torch.equal(a, ds[0][0]) for a in first)
    assert len({x.numpy().tobytes() for x in first}) > 1


def test_randaugment_at_full_magnitude_runs():
    """timm's increasing posterize keeps 0 bits at magnitude 10 (a black image); Pillow 13
    refuses 0 bits, which is why setup.py pins pillow<13."""
    ra = rand_augment_transform("rand-n1-m10-mstd0-inc1", {"translate_const": 10, "img_mean": (124, 116, 104)})
    ra.ops = [op for op in ra.ops if op.name == "PosterizeIncreasing"]
    ra.ops[0].prob = 1.0
    out = ra(Image.new("RGB", (S, S), (200, 100, 50)))
    assert np.asarray(out).max() == 0


# ---------- error paths ----------

@pytest.mark.parametrize("name", sorted(NUM_CLASSES))
def test_missing_root(tmp_path, name):
    missing = tmp_path / "nope"
    with pytest.raises(BadInput, match="directory not found") as e:
        opened(name, missing)
    assert str(missing) in str(e.value)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(BadInput, match="directory not found"):
        load_real_batch(name, tmp_path / "afile", 1, S, 0)


@pytest.mark.parametrize("name,writer,delete,needle", [
    ("c100", write_cifar, "cifar-100-python/train", "no cifar-100-python/train (expected the CIFAR-100"),
    ("c100", write_cifar, "cifar-100-python/meta", "no cifar-100-python/meta"),
    ("flowers", write_flowers, "setid.mat", "no setid.mat"),
    ("flowers", write_flowers, "imagelabels.mat", "no imagelabels.mat"),
    ("flowers", write_flowers, "jpg/image_00003.jpg", "no jpg/image_00003.jpg"),
    ("chaoyang", write_chaoyang, "train.json", "no train.json"),
    ("chaoyang", write_chaoyang, "train/c.jpg", "no train/c.jpg"),
])
def test_missing_file(tmp_path, name, writer, delete, needle):
    root = writer(tmp_path)
    (root / delete).unlink()
    with pytest.raises(BadInput) as e:
        opened(name, root)
    assert needle in str(e.value) and str(root) in str(e.value)
    assert len(str(e.value).splitlines()) == 1


def test_empty_root_names_expected_layout(tmp_path):
    with pytest.raises(BadInput, match=r"no cifar-100-python/train \(expected the CIFAR-100 python pickles\)"):
        opened("c100", tmp_path)
    with pytest.raises(BadInput, match=r"no jpg/ directory \(expected Flowers-102"):
        opened("flowers", tmp_path)
    with pytest.raises(BadInput, match=r"no val/ directory"):
        opened("imagenet", tmp_path, "val")
    (tmp_path / "train").mkdir()
    with pytest.raises(BadInput, match="not a readable imagenet data set"):
        opened("imagenet", tmp_path)
    (tmp_path / "train" / "n0").mkdir()
    with pytest.raises(BadInput, match="n0"):
        opened("imagenet", tmp_path)


def test_malformed_json(tmp_path):
    root = write_chaoyang(tmp_path)
    (root / "test.json").write_text('[{"name": "test/x.jpg", "label": 1}')
    with pytest.raises(BadInput, match="malformed JSON") as e:
        opened("chaoyang", root, "test")
    assert str(root / "test.json") in str(e.value)
    (root / "test.json").write_text('{"name": "test/x.jpg"}')
    with pytest.raises(BadInput, match="expected a JSON list"):
        opened("chaoyang", root, "test")
    (root / "test.json").write_text('[{"name": "test/x.jpg", "label": "1"}]')
    with pytest.raises(BadInput, match="entry 0 must be"):
        opened("chaoyang", root, "test")
    (root / "test.json").write_text('[{"name": "test/x.jpg", "label": 4}]')
    with pytest.raises(BadInput, match=r"labels must lie in \[0, 4\)"):
        opened("chaoyang", root, "test")


def test_malformed_pickle(tmp_path):
    root = write_cifar(tmp_path)
    path = root / "cifar-100-python" / "train"
    path.write_bytes(b"this is not a pickle")
    with pytest.raises(BadInput, match="not a readable c100 data set") as e:
        opened("c100", root)
    assert str(root) in str(e.value) and len(str(e.value).splitlines()) == 1
    _pickle(path, {"data": np.zeros((2, 100), np.uint8), "fine_labels": [0, 1]})
    with pytest.raises(BadInput, match="not a readable c100 data set"):
        opened("c100", root)
    _pickle(path, {"data": np.zeros((2, 3072), np.uint8)})
    with pytest.raises(BadInput, match="KeyError"):
        opened("c100", root)
    _pickle(path, {"data": np.zeros((2, 3072), np.uint8), "fine_labels": [0, 100]})
    with pytest.raises(BadInput, match=r"labels must lie in \[0, 100\)"):
        opened("c100", root)


def test_malformed_mat(tmp_path):
    root = write_flowers(tmp_path)
    (root / "imagelabels.mat").write_bytes(b"garbage, not MATLAB")
    with pytest.raises(BadInput, match="not a readable flowers data set") as e:
        opened("flowers", root)
    assert str(root) in str(e.value)
    scipy.io.savemat(root / "imagelabels.mat", {"labels": np.array([FLOWER_LABELS_1BASED])})
    scipy.io.savemat(root / "setid.mat", {"trnid": np.array([[1, 2]]), "tstid": np.array([[3]])})
    assert targets(opened("flowers", root)) == [4, 101]
    with pytest.raises(BadInput, match="KeyError"):
        opened("flowers", root, "trainval")
    scipy.io.savemat(root / "setid.mat", {"trnid": np.array([[1, 9]])})
    with pytest.raises(BadInput, match="not a readable flowers data set"):
        opened("flowers", root)


def test_unreadable_image_named_at_access(tmp_path):
    root = write_imagenet(tmp_path)
    bad = root / "train" / "n05555555" / "d.JPEG"
    bad.write_bytes(b"not a jpeg")
    ds = opened("imagenet", root)
    with pytest.raises(BadInput, match="cannot read image") as e:
        ds[2]
    assert str(bad) in str(e.value)


def test_batch_too_large(tmp_path):
    root = write_cifar(tmp_path)
    with pytest.raises(BadInput, match="batch size 11 exceeds the 10 images") as e:
        load_real_batch("c100", root, batch_size=11, img_size=S, seed=0)
    assert str(root) in str(e.value)
    with pytest.raises(BadInput, match="batch size 0"):
        load_real_batch("c100", root, batch_size=0, img_size=S, seed=0)


def test_unknown_name_split_and_size(tmp_path):
    with pytest.raises(BadInput, match="'cifar10': unknown") as e:
        opened("cifar10", tmp_path)
    assert "c100" in str(e.value)
    with pytest.raises(BadInput, match="'svhn': unknown"):
        load_real_batch("svhn", tmp_path, 1, S, 0)
    root = write_cifar(tmp_path / "c")
    with pytest.raises(BadInput, match="'valid': unknown for c100"):
        opened("c100", root, "valid")
    with pytest.raises(BadInput, match="img_size 0"):
        load_real_batch("c100", root, 1, 0, 0)


def test_default_synthetic_batch_is_bit_identical():
    """The statistics cache was filled with this batch (default settings); the real-data readers
    must not change it. The digests are those of the portable batch (the same on any CPU:
    tests/test_statistics_cache.py checks it under other instruction sets)."""
    want = {"c100": "6ffca7d2b8dac8214ac7b0d1f859136fa7b4d985975b7eb2715f1584e2425573",
            "chaoyang": "7404acea13b09aaa0f13ace4cbf6fe7e01d012218de48f8cbd072bb4754d6392"}
    for name, digest in want.items():
        x, y = make_batch(name, 16, 224, 0)
        assert hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest() == digest
