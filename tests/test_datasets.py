"""Round-trip tiny fixtures written in each data set's real on-disk format through the readers.

Every image is one flat colour tied to its index, so a loaded tensor can be traced back to the
fixture image it came from and its label checked against the one written.
"""

import json
import os
import pickle

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from vit_space.datasets import (IMAGENET_MEAN, IMAGENET_STD, NUM_CLASSES, READERS, ImageDataset,
                                load_real_batch, open_dataset)
from vit_space.errors import BadInput

S = 16  # img_size used throughout


def colour_of(k):
    """Distinct flat RGB colour for fixture image k (red channel steps by 20)."""
    return (10 + 20 * k, 255 - 20 * k, (37 * k) % 256)


def mean_rgb(x):
    """Undo the normalisation of a [3,H,W] tensor and return its mean colour in 0..255."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
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


# ---------- fixture writers (real formats) ----------

C100_TRAIN_LABELS = [(7 * k + 3) % 100 for k in range(10)]
C100_TEST_LABELS = [99, 0, 42, 5]


def write_cifar(root, str_keys=False):
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    for split, labels, offset in (("train", C100_TRAIN_LABELS, 0), ("test", C100_TEST_LABELS, 10)):
        data = np.zeros((len(labels), 3072), np.uint8)
        for i in range(len(labels)):
            r, g, b = colour_of(offset + i) if offset + i < 12 else (1, 2, 3)
            data[i, :1024], data[i, 1024:2048], data[i, 2048:] = r, g, b  # RGB planes
        blob = {"data": data, "fine_labels": labels, "coarse_labels": [0] * len(labels)}
        if not str_keys:
            blob = {k.encode(): v for k, v in blob.items()}
        with open(d / split, "wb") as f:
            pickle.dump(blob, f)
    return root


FLOWER_LABELS_1BASED = [5, 102, 1, 17, 44, 3, 99, 60]  # label of image_0000{k+1}.jpg
TRNID, VALID, TSTID = [3, 1, 6, 8], [2], [4, 5, 7]


def write_flowers(root):
    for k in range(len(FLOWER_LABELS_1BASED)):
        save_flat(root / "jpg" / f"image_{k + 1:05d}.jpg", k)
    scipy.io.savemat(root / "imagelabels.mat", {"labels": np.array([FLOWER_LABELS_1BASED], np.uint8)})
    scipy.io.savemat(root / "setid.mat", {"trnid": np.array([TRNID], np.uint16),
                                          "valid": np.array([VALID], np.uint16),
                                          "tstid": np.array([TSTID], np.uint16)})
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


# ---------- happy paths ----------

def test_registry_and_class_counts():
    assert set(READERS) == set(NUM_CLASSES)
    assert NUM_CLASSES == {"c100": 100, "flowers": 102, "chaoyang": 4, "imagenet": 1000}


@pytest.mark.parametrize("str_keys", [False, True])
def test_cifar_items(tmp_path, str_keys):
    root = write_cifar(tmp_path, str_keys)
    ds = open_dataset("c100", root, "train", img_size=S)
    assert isinstance(ds, ImageDataset) and len(ds) == 10
    for k in range(10):
        x, y = ds[k]
        assert x.shape == (3, S, S) and x.dtype == torch.float32
        assert type(y) is int and y == C100_TRAIN_LABELS[k]
        np.testing.assert_allclose(mean_rgb(x), colour_of(k), atol=0.5)
    # the exact normalisation: image 0 has red 10 everywhere
    assert torch.allclose(ds[0][0][0], torch.full((S, S), (10 / 255 - 0.485) / 0.229), atol=1e-5)
    test = open_dataset("c100", root, "test", img_size=S)
    assert [test[i][1] for i in range(4)] == C100_TEST_LABELS
    np.testing.assert_allclose(mean_rgb(test[1][0]), colour_of(11), atol=0.5)


def test_cifar_row_major_orientation(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    data = np.zeros((1, 3072), np.uint8)
    data[0, :512] = 255  # red plane, first 16 of 32 rows: top half red
    with open(d / "train", "wb") as f:
        pickle.dump({b"data": data, b"fine_labels": [9]}, f)
    x, y = open_dataset("c100", tmp_path, img_size=S)[0]
    red = x[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    assert y == 9
    assert red[:6].min() > 0.99 and red[10:].max() < 0.01  # top rows red, bottom rows black
    assert x[1].max() < -2 and x[2].max() < -1.8  # green and blue planes are zero


def test_flowers_splits_and_labels(tmp_path):
    root = write_flowers(tmp_path)
    ds = open_dataset("flowers", root, "train", img_size=S)
    assert ds.labels == [FLOWER_LABELS_1BASED[i - 1] - 1 for i in TRNID] == [0, 4, 2, 59]
    x, y = ds[2]  # trnid[2] = 6 -> image_00006.jpg, label 3 (1-based) -> 2
    assert x.shape == (3, S, S) and x.dtype == torch.float32 and y == 2
    assert which_image(x, 8) == 5
    assert open_dataset("flowers", root, "test", img_size=S).labels == [16, 43, 98]
    assert open_dataset("flowers", root, "trainval", img_size=S).labels == [0, 4, 2, 59, 101]


def test_chaoyang_labels_and_paths(tmp_path):
    root = write_chaoyang(tmp_path)
    train = open_dataset("chaoyang", root, "train", img_size=S)
    assert train.labels == [l for _, l in CHAOYANG["train"]]
    x, y = train[2]
    assert (x.shape, y, which_image(x, 9)) == ((3, S, S), 3, 2)
    test = open_dataset("chaoyang", root, "test", img_size=S)
    x, y = test[1]
    assert (y, which_image(x, 9)) == (3, 7)


def test_imagenet_sorted_class_index(tmp_path, monkeypatch):
    root = write_imagenet(tmp_path)
    real_scandir = os.scandir  # list dirs in reverse so the order really has to come from sorting
    monkeypatch.setattr(os, "scandir", lambda p: sorted(real_scandir(p), key=lambda e: e.name, reverse=True))
    train = open_dataset("imagenet", root, "train", img_size=S)
    # n01440764 -> 0 (b.png, c.jpg), n05555555 -> 1 (d), n09999999 -> 2 (a, e); notes.txt skipped
    assert [p.name for p in train.images] == ["b.png", "c.jpg", "d.JPEG", "a.JPEG", "e.jpg"]
    assert train.labels == [0, 0, 1, 2, 2]
    assert [which_image(train[i][0], 8) for i in range(5)] == [1, 2, 3, 0, 4]
    val = open_dataset("imagenet", root, "val", img_size=S)
    assert [p.name for p in val.images] == ["v2.JPEG", "v1.JPEG", "v3.png"]
    assert val.labels == [0, 1, 2]


def test_load_real_batch_matches_seeded_indices(tmp_path):
    root = write_cifar(tmp_path)
    x, y = load_real_batch("c100", root, batch_size=4, img_size=S, seed=0)
    assert x.shape == (4, 3, S, S) and x.dtype == torch.float32 and y.dtype == torch.int64
    idx = np.random.default_rng(0).choice(10, size=4, replace=False)
    assert [which_image(xi, 10) for xi in x] == list(idx)
    assert y.tolist() == [C100_TRAIN_LABELS[i] for i in idx]


@pytest.mark.parametrize("name,writer,n", [("c100", write_cifar, 10), ("flowers", write_flowers, 4),
                                           ("chaoyang", write_chaoyang, 6), ("imagenet", write_imagenet, 5)])
def test_load_real_batch_deterministic(tmp_path, name, writer, n):
    root = writer(tmp_path)
    a = load_real_batch(name, root, batch_size=3, img_size=S, seed=7)
    b = load_real_batch(name, str(root), batch_size=3, img_size=S, seed=7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    labels = open_dataset(name, root, img_size=S).labels
    for seed in (7, 8):
        _, y = load_real_batch(name, root, batch_size=3, img_size=S, seed=seed)
        idx = np.random.default_rng(seed).choice(n, size=3, replace=False)
        assert y.tolist() == [labels[i] for i in idx]
    full = load_real_batch(name, root, batch_size=n, img_size=S, seed=0)
    assert full[0].shape == (n, 3, S, S)


def test_different_seeds_pick_different_images(tmp_path):
    root = write_cifar(tmp_path)
    picks = [[which_image(xi, 10) for xi in load_real_batch("c100", root, 4, S, seed)[0]] for seed in (0, 1)]
    assert picks[0] != picks[1]
    assert len(set(picks[0])) == 4  # no replacement


def test_train_augment_flips_and_is_seedable(tmp_path):
    (tmp_path / "train").mkdir()
    img = Image.new("RGB", (40, 30), (255, 0, 0))
    img.paste((0, 0, 255), (20, 0, 40, 30))  # left red, right blue
    img.save(tmp_path / "train" / "half.png")
    (tmp_path / "train.json").write_text(json.dumps([{"name": "train/half.png", "label": 1}]))
    plain = open_dataset("chaoyang", tmp_path, img_size=S)
    assert torch.equal(plain[0][0], plain[0][0])
    assert plain[0][0][0, :, 0].mean() > plain[0][0][0, :, -1].mean()  # red on the left
    aug = open_dataset("chaoyang", tmp_path, img_size=S, train_augment=True)
    torch.manual_seed(0)
    first = [aug[0] for _ in range(30)]
    torch.manual_seed(0)
    again = [aug[0] for _ in range(30)]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
    assert all(x.shape == (3, S, S) and y == 1 and torch.isfinite(x).all() for x, y in first)
    red_left = [float(x[0, :, 0].mean() - x[0, :, -1].mean()) for x, _ in first]
    assert any(d > 1 for d in red_left) and any(d < -1 for d in red_left)  # both orientations seen
    assert len({x.numpy().tobytes() for x, _ in first}) > 5  # crops vary


# ---------- error paths ----------

@pytest.mark.parametrize("name", sorted(NUM_CLASSES))
def test_missing_root(tmp_path, name):
    missing = tmp_path / "nope"
    with pytest.raises(BadInput, match="directory not found") as e:
        open_dataset(name, missing)
    assert str(missing) in str(e.value)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(BadInput, match="directory not found"):
        load_real_batch(name, tmp_path / "afile", 1, S, 0)


@pytest.mark.parametrize("name,writer,delete,needle", [
    ("c100", write_cifar, "cifar-100-python/train", "cifar-100-python/train (expected the CIFAR-100"),
    ("flowers", write_flowers, "setid.mat", "no setid.mat"),
    ("flowers", write_flowers, "imagelabels.mat", "no imagelabels.mat"),
    ("flowers", write_flowers, "jpg/image_00003.jpg", "jpg/image_00003.jpg"),
    ("chaoyang", write_chaoyang, "train.json", "no train.json"),
    ("chaoyang", write_chaoyang, "train/c.jpg", "train/c.jpg"),
])
def test_missing_file(tmp_path, name, writer, delete, needle):
    root = writer(tmp_path)
    (root / delete).unlink()
    with pytest.raises(BadInput) as e:
        open_dataset(name, root, "train", img_size=S)
    assert needle in str(e.value) and str(root) in str(e.value)


def test_empty_root_names_expected_layout(tmp_path):
    with pytest.raises(BadInput, match=r"no cifar-100-python/train \(expected the CIFAR-100 python pickles\)"):
        open_dataset("c100", tmp_path)
    with pytest.raises(BadInput, match=r"no val/ directory"):
        open_dataset("imagenet", tmp_path, "val")
    (tmp_path / "train").mkdir()
    with pytest.raises(BadInput, match="no class directories"):
        open_dataset("imagenet", tmp_path)
    (tmp_path / "train" / "n0").mkdir()
    with pytest.raises(BadInput, match="n0: class directory has no"):
        open_dataset("imagenet", tmp_path)


def test_malformed_json(tmp_path):
    root = write_chaoyang(tmp_path)
    (root / "test.json").write_text('[{"name": "test/x.jpg", "label": 1}')
    with pytest.raises(BadInput, match="malformed JSON") as e:
        open_dataset("chaoyang", root, "test")
    assert str(root / "test.json") in str(e.value)
    (root / "test.json").write_text('{"name": "test/x.jpg"}')
    with pytest.raises(BadInput, match="expected a JSON list"):
        open_dataset("chaoyang", root, "test")
    (root / "test.json").write_text('[{"name": "test/x.jpg", "label": "1"}]')
    with pytest.raises(BadInput, match="entry 0 must be"):
        open_dataset("chaoyang", root, "test")
    (root / "test.json").write_text('[{"name": "test/x.jpg", "label": 4}]')
    with pytest.raises(BadInput, match=r"labels must lie in \[0, 4\)"):
        open_dataset("chaoyang", root, "test")


def test_malformed_pickle(tmp_path):
    root = write_cifar(tmp_path)
    path = root / "cifar-100-python" / "train"
    path.write_bytes(b"this is not a pickle")
    with pytest.raises(BadInput, match="not a readable pickle") as e:
        open_dataset("c100", root)
    assert str(path) in str(e.value)
    with open(path, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"fine_labels": [0, 1]}, f)
    with pytest.raises(BadInput, match=r"'data' must be uint8 N x 3072"):
        open_dataset("c100", root)
    with open(path, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8)}, f)
    with pytest.raises(BadInput, match="missing field 'fine_labels'"):
        open_dataset("c100", root)
    with open(path, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0, 100]}, f)
    with pytest.raises(BadInput, match=r"labels must lie in \[0, 100\)"):
        open_dataset("c100", root)


def test_malformed_mat(tmp_path):
    root = write_flowers(tmp_path)
    (root / "imagelabels.mat").write_bytes(b"garbage, not MATLAB")
    with pytest.raises(BadInput, match="not a readable .mat file") as e:
        open_dataset("flowers", root)
    assert str(root / "imagelabels.mat") in str(e.value)
    scipy.io.savemat(root / "imagelabels.mat", {"labels": np.array([FLOWER_LABELS_1BASED])})
    scipy.io.savemat(root / "setid.mat", {"trnid": np.array([[1, 2]]), "tstid": np.array([[3]])})
    assert open_dataset("flowers", root).labels == [4, 101]
    with pytest.raises(BadInput, match="setid.mat: missing key 'valid'"):
        open_dataset("flowers", root, "trainval")
    scipy.io.savemat(root / "setid.mat", {"trnid": np.array([[1, 9]])})
    with pytest.raises(BadInput, match=r"image ids must lie in 1\.\.8"):
        open_dataset("flowers", root)


def test_unreadable_image_named_at_access(tmp_path):
    root = write_imagenet(tmp_path)
    bad = root / "train" / "n05555555" / "d.JPEG"
    bad.write_bytes(b"not a jpeg")
    ds = open_dataset("imagenet", root, img_size=S)
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
        open_dataset("cifar10", tmp_path)
    assert "c100" in str(e.value)
    with pytest.raises(BadInput, match="'svhn': unknown"):
        load_real_batch("svhn", tmp_path, 1, S, 0)
    root = write_cifar(tmp_path / "c")
    with pytest.raises(BadInput, match="'valid': unknown for c100"):
        open_dataset("c100", root, "valid")
    with pytest.raises(BadInput, match="img_size 0"):
        open_dataset("c100", root, img_size=0)
