"""ViT statistics (shapes, sketches, agreement with the model's own tensors), the on-disk cache
(hits, keys, corruption recovery, atomic writes, stack files), models built on their device, the
malloc arena cap, the synthetic batch, and runners/extract.py."""
import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import sys
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vit_space.stats.cache as cache_mod
import vit_space.core.malloc as malloc_mod
from primitives import parse_formula
from vit_space.core.atomic import atomic_dump
from vit_space.core.errors import BadInput
from vit_space.data.batches import make_batch, synthetic_batch
from vit_space.data.datasets import NUM_CLASSES
from vit_space.models.builders import build_model, transformer_blocks
from vit_space.scoring.table import StatsTable
from vit_space.stats.cache import StatsCache
from vit_space.stats.parallel import fill_cache
from vit_space.stats.stacking import signature, stack_in_place, stack_items
from vit_space.stats.statistics import SCALAR_FIELDS, TENSOR_FIELDS, StatsConfig, extract_stats
from vit_space.stats.terminals import vit_primitive_set

ROOT = Path(__file__).resolve().parents[1]
IMG, BATCH = 32, 4


@pytest.fixture(scope="module")
def af_arch(autoformer_bench):
    """The cheapest kind of AutoFormer record: width 192, 12 blocks, with mixed ratios."""
    for r in autoformer_bench.records:
        a = r["arch"]
        if a["hidden_dim"] == 192 and a["depth"] == 12 and len(set(a["mlp_ratio"])) == 2:
            return a
    pytest.fail("no width-192 depth-12 record in the bench")


@pytest.fixture(scope="module")
def pit_arch(pit_bench):
    return pit_bench.records[0]["arch"]


@pytest.fixture(scope="module")
def full_cfg(tiny_cfg):
    return dataclasses.replace(tiny_cfg, rows=None, tokens=None)


@pytest.fixture(scope="module")
def stats(af_arch, pit_arch, tiny_cfg, full_cfg):
    """Extracted once per module: {(space, dataset, 'sketch'|'full'): stats}."""
    out = {}
    for space, arch in (("autoformer", af_arch), ("pit", pit_arch)):
        out[space, "c100", "sketch"] = extract_stats(space, arch, "c100", tiny_cfg)
        out[space, "c100", "full"] = extract_stats(space, arch, "c100", full_cfg)
        out[space, "chaoyang", "sketch"] = extract_stats(space, arch, "chaoyang", tiny_cfg)
    return out


def expected_layout(space, arch, img=IMG):
    """Per block (D, H, tokens incl. class token), from the record and the patching rules."""
    if space == "autoformer":
        n = (img // 16) ** 2 + 1
        D = arch["hidden_dim"]
        return [(D, int(D * r), n) for r in arch["mlp_ratio"]]
    side = (img - 16) // 8 + 1  # patch 16, stride 8
    out = []
    for stage, (depth, heads) in enumerate(zip(arch["depth"], arch["num_heads"])):
        if stage:
            side = (side - 1) // 2 + 1  # PiT pooling: 3x3 depthwise conv, stride 2, padding 1
        D = arch["base_dim"] * heads
        out += [(D, D * arch["mlp_ratio"], side * side + 1)] * depth
    return out


# ---------------------------------------------------------------- shapes

@pytest.mark.parametrize("space", ["autoformer", "pit"])
def test_sketch_shapes(space, stats, af_arch, pit_arch, tiny_cfg):
    arch = af_arch if space == "autoformer" else pit_arch
    s = stats[space, "c100", "sketch"]
    layout = expected_layout(space, arch)
    rows, tokens = tiny_cfg.rows, tiny_cfg.tokens  # the sketch sizes (StatsConfig defaults)
    assert rows is not None and tokens is not None and rows < 4 * 192 and tokens < 10
    assert len(s["blocks"]) == len(layout)
    assert s["meta"]["space"] == space and s["meta"]["arch"] == arch and s["meta"]["dataset"] == "c100"
    assert s["meta"]["config"] == dataclasses.asdict(tiny_cfg)
    for block, (D, H, n) in zip(s["blocks"], layout):
        assert set(block) == set(TENSOR_FIELDS) | set(SCALAR_FIELDS)
        assert block["msa_w"].shape == block["msa_g"].shape == (min(rows, 4 * D), D)
        assert block["mlp_w"].shape == block["mlp_g"].shape == (min(rows, 2 * H), D)
        for f in ("msa_a", "msa_ga", "mlp_a", "mlp_ga"):
            assert block[f].shape == (BATCH, min(tokens, n), D), f
            assert block[f].dtype == np.float32
        assert block["msa_numel"] == 4 * D * D
        assert block["mlp_numel"] == 2 * H * D


@pytest.mark.parametrize("space", ["autoformer", "pit"])
def test_full_shapes(space, stats, af_arch, pit_arch):
    arch = af_arch if space == "autoformer" else pit_arch
    s = stats[space, "c100", "full"]
    for block, (D, H, n) in zip(s["blocks"], expected_layout(space, arch)):
        assert block["msa_w"].shape == block["msa_g"].shape == (4 * D, D)
        assert block["mlp_w"].shape == block["mlp_g"].shape == (2 * H, D)
        for f in ("msa_a", "msa_ga", "mlp_a", "mlp_ga"):
            assert block[f].shape == (BATCH, n, D), f
        assert block["msa_numel"] == block["msa_w"].size
        assert block["mlp_numel"] == block["mlp_w"].size


def test_pit_token_sketch_bites(stats, tiny_cfg):
    """At 32 px, PiT's first stage has 3x3+1 = 10 tokens, more than the sketch keeps."""
    first = stats["pit", "c100", "sketch"]["blocks"][0]
    assert first["msa_a"].shape[1] == tiny_cfg.tokens < 10
    assert stats["pit", "c100", "full"]["blocks"][0]["msa_a"].shape[1] == 10


# ---------------------------------------------------------------- agreement with the model

def _reference(space, arch, dataset, cfg):
    """An independent forward/backward: model tensors, block inputs and block-output grads."""
    model = build_model(space, arch, NUM_CLASSES[dataset], cfg.img_size)
    images, labels = make_batch(dataset, cfg.batch_size, cfg.img_size, cfg.seed)
    blocks = transformer_blocks(model)
    inputs, outputs = [], []
    hooks = [b.register_forward_pre_hook(lambda m, a: inputs.append(a[0].detach())) for b in blocks]

    def keep(m, a, out):
        out.retain_grad()
        outputs.append(out)
    hooks += [b.register_forward_hook(keep) for b in blocks]
    F.cross_entropy(model(images), labels).backward()
    for h in hooks:
        h.remove()
    return model, blocks, inputs, outputs


@pytest.mark.parametrize("space", ["autoformer", "pit"])
def test_full_stats_equal_the_models_tensors(space, stats, af_arch, pit_arch, full_cfg):
    arch = af_arch if space == "autoformer" else pit_arch
    s = stats[space, "c100", "full"]
    model, blocks, inputs, outputs = _reference(space, arch, "c100", full_cfg)
    assert len(blocks) == len(s["blocks"])
    for i, (block, rec) in enumerate(zip(blocks, s["blocks"])):
        attn, mlp = block.attn, block.mlp
        w = torch.cat([attn.qkv.weight, attn.proj.weight]).detach().numpy()
        assert np.array_equal(rec["msa_w"], w), i
        assert np.array_equal(rec["mlp_w"], torch.cat([mlp.fc1.weight, mlp.fc2.weight.t()]).detach().numpy())
        g = torch.cat([attn.qkv.weight.grad, attn.proj.weight.grad]).numpy()
        np.testing.assert_allclose(rec["msa_g"], g, rtol=1e-4, atol=1e-9)
        np.testing.assert_allclose(rec["mlp_g"],
                                   torch.cat([mlp.fc1.weight.grad, mlp.fc2.weight.grad.t()]).numpy(),
                                   rtol=1e-4, atol=1e-9)
        with torch.no_grad():  # A = what each module adds to the residual stream
            x = inputs[i]
            msa = attn(block.norm1(x))
            mlp_out = mlp(block.norm2(x + msa))
        np.testing.assert_allclose(rec["msa_a"], msa.numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(rec["mlp_a"], mlp_out.numpy(), rtol=1e-4, atol=1e-6)
        # the MLP output is the block's last residual add, so its gradient is the block output's
        np.testing.assert_allclose(rec["mlp_ga"], outputs[i].grad.numpy(), rtol=1e-4, atol=1e-12)


@pytest.mark.parametrize("space", ["autoformer", "pit"])
@pytest.mark.parametrize("kind", ["sketch", "full"])
def test_gradients_nonzero_and_finite(space, kind, stats):
    for i, block in enumerate(stats[space, "c100", kind]["blocks"]):
        for f in TENSOR_FIELDS:
            assert np.all(np.isfinite(block[f])), (i, f)
        for f in ("msa_w", "mlp_w", "msa_g", "mlp_g", "msa_a", "mlp_a", "msa_ga", "mlp_ga"):
            assert np.abs(block[f]).sum() > 0, (i, f)


@pytest.mark.parametrize("space", ["autoformer", "pit"])
def test_weights_identical_across_datasets(space, stats):
    a, b = stats[space, "c100", "sketch"], stats[space, "chaoyang", "sketch"]
    for x, y in zip(a["blocks"], b["blocks"]):
        assert np.array_equal(x["msa_w"], y["msa_w"])
        assert np.array_equal(x["mlp_w"], y["mlp_w"])
    # ... while the data set does change what the batch does to them
    assert not np.allclose(a["blocks"][0]["msa_g"], b["blocks"][0]["msa_g"])
    assert not np.allclose(a["blocks"][0]["msa_a"], b["blocks"][0]["msa_a"])


def _row_positions(part, whole):
    """Index in `whole` of each row of `part` (rows of random weights are distinct)."""
    pos = []
    for row in part:
        hits = np.flatnonzero(np.all(whole == row, axis=1))
        assert len(hits) == 1
        pos.append(int(hits[0]))
    return pos


@pytest.mark.parametrize("space", ["autoformer", "pit"])
def test_sketch_keeps_the_same_rows_for_w_and_g(space, stats):
    sketch, full = stats[space, "c100", "sketch"], stats[space, "c100", "full"]
    seen = set()
    for s, f in zip(sketch["blocks"], full["blocks"]):
        for w, g in (("msa_w", "msa_g"), ("mlp_w", "mlp_g")):
            rows = _row_positions(s[w], f[w])
            assert rows == sorted(rows) and len(set(rows)) == len(rows)
            np.testing.assert_allclose(s[g], f[g][rows], rtol=1e-4, atol=1e-9)
            seen.add(tuple(rows))
        # the activation sketch keeps the same tokens for A and its gradient
        if s["msa_a"].shape[1] < f["msa_a"].shape[1]:
            tok = [t for t in range(f["msa_a"].shape[1])
                   if any(np.array_equal(f["msa_a"][:, t], s["msa_a"][:, k]) for k in range(s["msa_a"].shape[1]))]
            assert len(tok) == s["msa_a"].shape[1]
            np.testing.assert_allclose(s["msa_ga"], f["msa_ga"][:, tok], rtol=1e-4, atol=1e-12)
            np.testing.assert_allclose(s["mlp_a"], f["mlp_a"][:, tok], rtol=1e-4, atol=1e-6)
    assert len(seen) > 1  # rows are drawn, not always the first ones


# ---------------------------------------------------------------- the cache

def _assert_same_stats(a, b):
    assert a["meta"] == b["meta"]
    assert len(a["blocks"]) == len(b["blocks"])
    for x, y in zip(a["blocks"], b["blocks"]):
        assert set(x) == set(y)
        for k in x:
            if isinstance(x[k], np.ndarray):
                assert x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k]), k
            else:
                assert x[k] == y[k], k


def _no_tmp(root):
    assert list(Path(root).rglob("*.tmp")) == []


def test_cache_miss_then_hit(tmp_path, pit_arch, tiny_cfg, monkeypatch):
    cache = StatsCache(tmp_path)
    path = cache.path("pit", pit_arch, "c100", tiny_cfg)
    assert not path.exists() and not cache.contains("pit", pit_arch, "c100", tiny_cfg)
    first = cache.get("pit", pit_arch, "c100", tiny_cfg)
    assert (cache.misses, cache.hits) == (1, 0)
    assert path.is_file() and path.suffix == ".joblib" and path.is_relative_to(tmp_path)
    assert cache.contains("pit", pit_arch, "c100", tiny_cfg)
    assert cache.disk_bytes() == path.stat().st_size > 0

    def no_recompute(*a, **k):
        raise AssertionError("a hit must not extract again")
    monkeypatch.setattr(cache_mod, "extract_stats", no_recompute)
    second = cache.get("pit", pit_arch, "c100", tiny_cfg)
    assert (cache.misses, cache.hits) == (1, 1)
    _assert_same_stats(first, second)
    # a fresh cache object on the same directory reads the same entry
    third = StatsCache(tmp_path).get("pit", pit_arch, "c100", tiny_cfg)
    _assert_same_stats(first, third)
    _no_tmp(tmp_path)


def test_cached_stats_equal_a_fresh_extraction(tmp_path, pit_arch, tiny_cfg, stats):
    got = StatsCache(tmp_path).get("pit", pit_arch, "c100", tiny_cfg)
    _assert_same_stats(got, stats["pit", "c100", "sketch"])


def test_cache_keys_differ_per_input(tmp_path, af_arch, pit_arch, tiny_cfg):
    cache = StatsCache(tmp_path)
    base = cache.path("autoformer", af_arch, "c100", tiny_cfg)
    assert base == cache.path("autoformer", dict(af_arch), "c100", StatsConfig(batch_size=4, img_size=32))
    variants = [
        ("autoformer", af_arch, "c100", dataclasses.replace(tiny_cfg, seed=1)),
        ("autoformer", af_arch, "c100", dataclasses.replace(tiny_cfg, batch_size=2)),
        ("autoformer", af_arch, "c100", dataclasses.replace(tiny_cfg, rows=tiny_cfg.rows + 1)),
        ("autoformer", af_arch, "c100", dataclasses.replace(tiny_cfg, rows=None)),
        ("autoformer", af_arch, "c100", dataclasses.replace(tiny_cfg, tokens=tiny_cfg.tokens + 1)),
        ("autoformer", af_arch, "c100", dataclasses.replace(tiny_cfg, img_size=64)),
        ("autoformer", af_arch, "c100", dataclasses.replace(tiny_cfg, data_root="/data")),
        ("autoformer", af_arch, "chaoyang", tiny_cfg),
        ("autoformer", dict(af_arch, num_heads=[3 if h == 4 else 4 for h in af_arch["num_heads"]]),
         "c100", tiny_cfg),
        ("pit", pit_arch, "c100", tiny_cfg),
    ]
    paths = [cache.path(*v) for v in variants]
    keys = [v[3].key(*v[:3]) for v in variants]
    assert len(set(paths) | {base}) == len(variants) + 1
    assert len(set(keys) | {tiny_cfg.key("autoformer", af_arch, "c100")}) == len(variants) + 1


def test_gpu_entries_are_kept_apart_from_cpu_ones(tmp_path, af_arch, tiny_cfg):
    """CUDA draws other initial weights than the CPU: its entries (same keys, same format) and
    stacks live in their own folders, so a cache never mixes the two; the CPU layout is as before."""
    item = ("autoformer", af_arch, "c100")
    cpu, gpu = StatsCache(tmp_path), StatsCache(tmp_path, device="cuda:0")
    assert cpu.path(*item, tiny_cfg) == (tmp_path / f"stats-v{cache_mod.STATS_VERSION}" / "autoformer"
                                         / f"{tiny_cfg.key(*item)}.joblib")
    assert gpu.path(*item, tiny_cfg).name == cpu.path(*item, tiny_cfg).name
    assert gpu.path(*item, tiny_cfg).parent != cpu.path(*item, tiny_cfg).parent
    assert gpu.stack_path([item], tiny_cfg).parent != cpu.stack_path([item], tiny_cfg).parent


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _flip(path):
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    for i in range(mid, mid + 256):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _bad_checksum(path):
    entry = joblib.load(path)
    joblib.dump({"checksum": "0" * 32, "stats": entry["stats"]}, path)


def _tampered_array(path):
    entry = joblib.load(path)
    entry["stats"]["blocks"][3]["msa_g"][0, 0] += 1.0
    joblib.dump(entry, path)  # old checksum, changed data


def _not_an_entry(path):
    joblib.dump(["not", "an", "entry"], path)


def _empty(path):
    path.write_bytes(b"")


@pytest.mark.parametrize("damage", [_truncate, _flip, _bad_checksum, _tampered_array, _not_an_entry, _empty],
                         ids=lambda f: f.__name__.strip("_"))
def test_corrupted_entry_is_reported_and_recomputed(tmp_path, pit_arch, tiny_cfg, damage):
    cache = StatsCache(tmp_path)
    good = cache.get("pit", pit_arch, "c100", tiny_cfg)
    path = cache.path("pit", pit_arch, "c100", tiny_cfg)
    damage(path)
    with pytest.warns(UserWarning, match=r"is corrupted .*recomputing"):
        again = cache.get("pit", pit_arch, "c100", tiny_cfg)
    assert cache.recovered == 1 and cache.misses == 2 and cache.hits == 0
    _assert_same_stats(again, good)
    # the entry was rewritten: it now loads cleanly and holds the right stats
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reread = StatsCache(tmp_path).load(path)
    assert reread is not None
    _assert_same_stats(reread, good)
    _no_tmp(tmp_path)


def test_atomic_dump_leaves_nothing_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "entry.joblib"

    def broken_dump(obj, filename):
        Path(filename).write_bytes(b"half an entry")
        raise OSError("disk full")
    monkeypatch.setattr(cache_mod.joblib, "dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        atomic_dump({"x": 1}, target)
    assert not target.exists()
    assert list((tmp_path / "sub").iterdir()) == []


def test_atomic_dump_replaces(tmp_path):
    target = tmp_path / "entry.joblib"
    atomic_dump({"x": 1}, target)
    atomic_dump({"x": 2}, target)
    assert joblib.load(target) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["entry.joblib"]


def test_entry_checksum_is_blake2b_of_the_arrays_bytes(stats):
    """The entries' checksum format is fixed (entries written by earlier versions stay valid):
    blake2b-128 over each block's field names and array bytes, scalars by repr."""
    s = stats["pit", "c100", "sketch"]
    digest = hashlib.blake2b(digest_size=16)
    for block in s["blocks"]:
        for name in sorted(block):
            digest.update(name.encode())
            value = block[name]
            digest.update(value.tobytes() if isinstance(value, np.ndarray) else repr(value).encode())
    assert cache_mod._checksum(s) == digest.hexdigest()


# ---------------------------------------------------------------- stack files

STACK_TREES = ("add(msa_numel, mlp_numel)",
               "add(mean_abs(mul(msa_w, msa_g)), frobenius(matmul(gram(mlp_ga), msa_a)))",
               "sum(mul(mlp_a, mlp_ga))")


@pytest.fixture(scope="module")
def stack_setup(tmp_path_factory, autoformer_bench, tiny_cfg):
    """A cache holding 3 AutoFormer archs (several block shapes) x 2 data sets, and those items."""
    items = [("autoformer", r["arch"], d) for d in ("c100", "chaoyang") for r in autoformer_bench.records[:3]]
    cache = StatsCache(tmp_path_factory.mktemp("stack_cache"))
    fill_cache(cache, items, tiny_cfg, progress=False)
    return cache.root, items


def _assert_same_stack(a, b):
    assert a.n_items == b.n_items and len(a.groups) == len(b.groups)
    for x, y in zip(a.groups, b.groups):
        assert list(x) == list(y)
        for k in x:
            assert x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k]), k


def _entries(root, items, cfg):
    return [StatsCache(root).get(*item, cfg) for item in items]


def test_stack_in_place_equals_the_one_pass_stack(stack_setup, tiny_cfg):
    root, items = stack_setup
    entries = _entries(root, items, tiny_cfg)
    one_pass = stack_items(iter(entries))
    assert len(one_pass.groups) > 1 and one_pass.n_items == len(items)
    two_pass = stack_in_place(len(entries), lambda i: [signature(b) for b in entries[i]["blocks"]],
                              lambda i: entries[i])
    _assert_same_stack(one_pass, two_pass)


def test_stack_file_is_written_once_then_read_alone(stack_setup, tiny_cfg, monkeypatch):
    root, items = stack_setup
    cache = StatsCache(root)
    path = cache.stack_path(items, tiny_cfg)
    path.unlink(missing_ok=True)
    built = cache.stacked(items, tiny_cfg)
    assert path.is_file() and path.suffix == ".stack" and cache.misses == 0
    assert cache.disk_bytes() == path.stat().st_size + sum(cache.path(*i, tiny_cfg).stat().st_size for i in items)
    entries = _entries(root, items, tiny_cfg)
    _assert_same_stack(built, stack_items(entries))

    def no_entry(*a, **k):
        raise AssertionError("a stored stack must not read the entries")
    monkeypatch.setattr(StatsCache, "get", no_entry)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read = StatsCache(root).stacked(items, tiny_cfg)
    _assert_same_stack(read, built)
    # the same scores, bit for bit, as a table stacked from the entries
    for text in STACK_TREES:
        t = parse_formula(text, vit_primitive_set())
        np.testing.assert_array_equal(StatsTable(read).scores(t), StatsTable(entries).scores(t))
    # another list of items (here: another order) is another stack
    assert cache.stack_path(items[::-1], tiny_cfg) != path
    assert cache.stack_path(items, dataclasses.replace(tiny_cfg, seed=1)) != path
    _no_tmp(root)


def _arrays(stack):
    return [a for group in stack.groups for a in group.values()]


def test_stored_stack_is_mapped_copy_on_write(stack_setup, tiny_cfg, monkeypatch):
    """A stored stack is mapped, not read into fresh memory; a write into it stays private (the
    file and the next read are unchanged), and the read-into-memory mode gives the same arrays."""
    root, items = stack_setup
    StatsCache(root).stacked(items, tiny_cfg)  # the stack file exists
    path = StatsCache(root).stack_path(items, tiny_cfg)
    before = path.read_bytes()
    mapped = StatsCache(root).stacked(items, tiny_cfg)
    assert all(isinstance(a, np.memmap) and a.mode == "c" for a in _arrays(mapped))
    original = float(mapped.groups[0]["msa_g"][0, 0, 0])
    mapped.groups[0]["msa_g"][0, 0, 0] = original + 1.0
    assert path.read_bytes() == before
    again = StatsCache(root).stacked(items, tiny_cfg)
    assert again.groups[0]["msa_g"][0, 0, 0] == original != mapped.groups[0]["msa_g"][0, 0, 0]
    monkeypatch.setattr(cache_mod, "STACK_MMAP_MODE", None)
    read = StatsCache(root).stacked(items, tiny_cfg)
    assert not any(isinstance(a, np.memmap) for a in _arrays(read))
    _assert_same_stack(read, again)
    # where mapping fails (a file system without mmap), the file is read, not reported as damaged
    monkeypatch.setattr(cache_mod, "STACK_MMAP_MODE", "c")
    real_load = joblib.load

    def no_mmap(path, mmap_mode=None):
        if mmap_mode is not None:
            raise OSError(19, "No such device")
        return real_load(path)
    monkeypatch.setattr(cache_mod.joblib, "load", no_mmap)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache = StatsCache(root)
        _assert_same_stack(cache.stacked(items, tiny_cfg), again)
    assert cache.recovered == 0


def _tampered_stack(path):
    stack = joblib.load(path)
    stack["groups"][0]["msa_g"][0, 0, 0] += 1.0
    joblib.dump(stack, path)


def _foreign_stack(path):
    stack = joblib.load(path)
    stack["keys"] = stack["keys"][::-1]
    joblib.dump(stack, path)


@pytest.mark.parametrize("damage", [_truncate, _flip, _tampered_stack, _foreign_stack, _not_an_entry, _empty],
                         ids=lambda f: f.__name__.strip("_"))
def test_damaged_stack_is_reported_and_rebuilt(stack_setup, tiny_cfg, damage):
    root, items = stack_setup
    StatsCache(root).stacked(items, tiny_cfg)  # the stack file exists (dropped: it is mapped)
    path = StatsCache(root).stack_path(items, tiny_cfg)
    good = stack_items(_entries(root, items, tiny_cfg))
    damage(path)
    cache = StatsCache(root)
    with pytest.warns(UserWarning, match=r"is corrupted .*recomputing"):
        again = cache.stacked(items, tiny_cfg)
    assert cache.recovered == 1 and cache.misses == 0  # rebuilt from the entries, none extracted
    _assert_same_stack(again, good)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _assert_same_stack(StatsCache(root).stacked(items, tiny_cfg), good)
    _no_tmp(root)


# ---------------------------------------------------------------- models on a device, memory

WEIGHT_DIGESTS = {  # sha256 of the 32 px, 100-class models' state dicts: portable streams, so the
    "autoformer": "661be609757b031f55add952273fb6d6",  # same on any CPU (for one numpy and scipy)
    "pit": "a98dbb82a7bbd27cc34cd2791ec31c69",
}
CAPABILITY_PROBE = """
import hashlib, json, sys
from vit_space.models.builders import build_model
for space, arch in json.loads(sys.argv[1]).items():
    digest = hashlib.sha256()
    for name, t in build_model(space, arch, 100, 32).state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    print(space, digest.hexdigest()[:32])
from vit_space.data.batches import make_batch
images, labels = make_batch("c100", 16, 224, 0)
print("batch", hashlib.sha256(images.numpy().tobytes() + labels.numpy().tobytes()).hexdigest()[:32])
"""
BATCH_DIGEST = "6ffca7d2b8dac8214ac7b0d1f859136f"  # the default c100 batch (16 x 224 px, seed 0)


def _weights_digest(model):
    digest = hashlib.sha256()
    for name, t in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


@pytest.mark.parametrize("space", ["autoformer", "pit"])
def test_cpu_weights_unchanged(space, af_arch, pit_arch):
    """The default device and device="cpu" give the same weights, bit for bit, build after build
    (hence the same statistics and cached entries), and they are the pinned portable ones."""
    arch = af_arch if space == "autoformer" else pit_arch
    first = _weights_digest(build_model(space, arch, 100, IMG))
    assert _weights_digest(build_model(space, arch, 100, IMG, device="cpu")) == first
    assert first == WEIGHT_DIGESTS[space]


def test_cpu_weights_do_not_depend_on_the_instruction_set(af_arch, pit_arch, tmp_path):
    """torch's kernels for another CPU kind (ATEN_CPU_CAPABILITY stands in for one) draw the same
    weights and synthetic batch: the pinned digests hold under default, avx2 and the machine's own
    choice (torch's own randn / trunc_normal_ / kaiming_uniform_ differ between the first two)."""
    archs = json.dumps({"autoformer": af_arch, "pit": pit_arch})
    for capability in ("default", "avx2", None):
        env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
        if capability:
            env["ATEN_CPU_CAPABILITY"] = capability
        out = subprocess.run([sys.executable, "-c", CAPABILITY_PROBE, archs], env=env, cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
        assert dict(zip(out[::2], out[1::2])) == {**WEIGHT_DIGESTS, "batch": BATCH_DIGEST}, capability


@pytest.mark.parametrize("space", ["autoformer", "pit"])
def test_parameters_built_on_the_target_device(space, af_arch, pit_arch):
    """Every parameter is created on the device asked for (here 'meta': no GPU needed), and the
    caller's random state is left alone."""
    arch = af_arch if space == "autoformer" else pit_arch
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    model = build_model(space, arch, 100, IMG, device="meta")
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert {b.device.type for b in model.buffers()} <= {"meta"}
    assert torch.equal(torch.random.get_rng_state(), before)


ARENA_PROBE = """
import ctypes, sys, tempfile, threading
if sys.argv[1] == "import":
    import vit_space
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.fopen.restype = ctypes.c_void_p
libc.malloc_info.argtypes, libc.fclose.argtypes = [ctypes.c_int, ctypes.c_void_p], [ctypes.c_void_p]
barrier = threading.Barrier(8)
def work():  # 8 threads alive at once, each mallocs: glibc gives each its own arena if allowed
    p = libc.malloc(4096)
    barrier.wait()
    libc.free(p)
threads = [threading.Thread(target=work) for _ in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
with tempfile.NamedTemporaryFile("r") as f:
    fp = libc.fopen(f.name.encode(), b"w")
    libc.malloc_info(0, fp)
    libc.fclose(fp)
    print(f.read().count("<heap nr="))
"""


def test_freed_memory_is_trimmed_only_past_the_growth_threshold(monkeypatch):
    calls = []

    class FakeLibc:
        def malloc_trim(self, pad):
            calls.append(pad)
    monkeypatch.setattr(malloc_mod, "_glibc", lambda: FakeLibc())
    monkeypatch.setattr(malloc_mod, "_resident_after_trim", [0])
    resident = [100 * 2**20]
    monkeypatch.setattr(malloc_mod, "resident_bytes", lambda: resident[0])
    malloc_mod.release_freed_memory()  # no threshold: always
    assert calls == [0] and malloc_mod._resident_after_trim == [100 * 2**20]
    resident[0] += 10 * 2**20
    malloc_mod.release_freed_memory(grown=64 * 2**20)  # grown by 10 MiB only: kept
    assert calls == [0]
    resident[0] += 60 * 2**20
    malloc_mod.release_freed_memory(grown=64 * 2**20)  # grown by 70 MiB: trimmed
    assert calls == [0, 0] and malloc_mod._resident_after_trim == [170 * 2**20]
    monkeypatch.setattr(malloc_mod, "_glibc", lambda: None)  # not glibc: nothing happens
    malloc_mod.release_freed_memory()
    assert calls == [0, 0]


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"),
                    reason="malloc arenas are glibc's")
def test_importing_the_package_caps_malloc_arenas():
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}

    def arenas(mode):
        out = subprocess.run([sys.executable, "-c", ARENA_PROBE, mode], cwd=ROOT, env=env,
                             capture_output=True, text=True, check=True)
        return int(out.stdout)
    assert arenas("bare") > 2  # what glibc does on its own: one arena per thread here
    assert arenas("import") <= malloc_mod.ARENAS


FAULT_PROBE = """
import resource, sys
if sys.argv[1] == "import":
    import vit_space
import os, torch
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.ones(12_000_000).sum()  # 48 MB: above glibc's own largest mmap threshold (32 MB)
start = faults()
for _ in range(5):  # a tree's temporaries: allocated, written, freed, again and again
    torch.ones(12_000_000).sum()
print(faults() - start, os.environ.get("THP_MEM_ALLOC_ENABLE"))
"""


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"),
                    reason="malloc thresholds are glibc's")
def test_importing_the_package_reuses_large_blocks_without_page_faults():
    env = {k: v for k, v in os.environ.items()
           if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "THP_MEM_ALLOC_ENABLE")}

    def probe(mode, extra=None):
        out = subprocess.run([sys.executable, "-c", FAULT_PROBE, mode], cwd=ROOT,
                             env={**env, **(extra or {})}, capture_output=True, text=True, check=True)
        faults, thp = out.stdout.split()
        return int(faults), thp
    bare, thp = probe("bare")
    assert thp == "None" and bare > 5 * 10_000  # every 48 MB block faulted in again, page by page
    reused, thp = probe("import")
    assert thp == "1" and reused < bare / 10
    # a threshold the user set wins: nothing is changed
    assert probe("import", {"MALLOC_MMAP_THRESHOLD_": str(2**25)})[1] == "None"


# ---------------------------------------------------------------- the batch

def test_synthetic_batch_deterministic():
    x1, y1 = synthetic_batch("c100", 4, 32, 0)
    x2, y2 = synthetic_batch("c100", 4, 32, 0)
    assert x1.shape == (4, 3, 32, 32) and x1.dtype == torch.float32
    assert y1.shape == (4,) and y1.dtype == torch.int64
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, y3 = make_batch("c100", 4, 32, 0)
    assert torch.equal(x1, x3) and torch.equal(y1, y3)


def test_synthetic_batch_differs_by_dataset_and_seed():
    x, _ = synthetic_batch("c100", 4, 32, 0)
    assert not torch.equal(x, synthetic_batch("c100", 4, 32, 1)[0])
    assert not torch.equal(x, synthetic_batch("flowers", 4, 32, 0)[0])
    assert not torch.equal(x, synthetic_batch("chaoyang", 4, 32, 0)[0])


@pytest.mark.parametrize("dataset", ["c100", "flowers", "chaoyang", "imagenet"])
def test_synthetic_labels_in_range(dataset):
    x, y = synthetic_batch(dataset, 512, 16, 3)
    assert int(y.min()) >= 0 and int(y.max()) < NUM_CLASSES[dataset]
    if dataset == "chaoyang":
        assert set(y.tolist()) == {0, 1, 2, 3}
    else:
        assert len(set(y.tolist())) > min(NUM_CLASSES[dataset], 512) // 3
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05  # standard normal


def test_make_batch_bad_input(tmp_path):
    with pytest.raises(BadInput, match="--data-root .*nowhere: directory not found"):
        make_batch("c100", 4, 32, 0, data_root=str(tmp_path / "nowhere"))
    with pytest.raises(BadInput, match="--datasets cifar10"):
        make_batch("cifar10", 4, 32, 0)
    with pytest.raises(BadInput, match="--img-size 8"):
        make_batch("c100", 4, 8, 0)
    with pytest.raises(BadInput, match="--batch-size 0"):
        make_batch("c100", 0, 32, 0)


def test_extract_with_missing_data_root_fails(tmp_path, pit_arch, tiny_cfg):
    cfg = dataclasses.replace(tiny_cfg, data_root=str(tmp_path / "nowhere"))
    with pytest.raises(BadInput, match="--data-root"):
        extract_stats("pit", pit_arch, "c100", cfg)
    with pytest.raises(BadInput, match="--data-root"):
        StatsCache(tmp_path / "c").get("pit", pit_arch, "c100", cfg)
    assert not list((tmp_path).rglob("*.joblib"))


# ---------------------------------------------------------------- runners/extract.py

def _start(args):
    env = {k: v for k, v in os.environ.items() if k not in ("VIT_BENCH_101", "AUTOPROX_CACHE")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.Popen([sys.executable, "runners/extract.py", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=180):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def runner_runs(tmp_path_factory):
    """Two extraction runs into one cache, and (concurrently with the first, to save start-up
    time) one run with a bad --space."""
    cache_dir = tmp_path_factory.mktemp("runner_cache")
    bad_dir = tmp_path_factory.mktemp("runner_bad")
    args = ["--archs", "4", "--img-size", "32", "--batch-size", "2", "--datasets", "c100",
            "--cache", str(cache_dir), "--quiet"]
    bad = _start(["--space", "nope", "--archs", "4", "--img-size", "32", "--cache", str(bad_dir), "--quiet"])
    first = _start(args)
    bad, first = _finish(bad), _finish(first)
    after_first = sorted(p.name for p in cache_dir.rglob("*.joblib"))
    tmp_after_first = list(cache_dir.rglob("*.tmp"))
    second = _finish(_start(args))
    return {"cache": cache_dir, "bad_dir": bad_dir, "bad": bad, "first": first, "second": second,
            "after_first": after_first, "tmp_after_first": tmp_after_first}


def test_extract_runner(runner_runs):
    first, second, cache_dir = runner_runs["first"], runner_runs["second"], runner_runs["cache"]
    assert first.returncode == 0, first.stderr
    assert "entries: 4 (4 extracted, 0 from cache)" in first.stdout
    assert len(runner_runs["after_first"]) == 4
    assert runner_runs["tmp_after_first"] == []
    assert second.returncode == 0, second.stderr
    assert "entries: 4 (0 extracted, 4 from cache)" in second.stdout
    assert sorted(p.name for p in cache_dir.rglob("*.joblib")) == runner_runs["after_first"]
    _no_tmp(cache_dir)


def test_extract_runner_entries_match_the_library(runner_runs, autoformer_bench):
    """The runner's entries sit where StatsCache looks for them, under the CLI's config."""
    cfg = StatsConfig(batch_size=2, img_size=32, seed=0)
    cache = StatsCache(runner_runs["cache"])
    for record in autoformer_bench.records[:4]:
        assert cache.contains("autoformer", record["arch"], "c100", cfg)
    got = cache.get("autoformer", autoformer_bench.records[0]["arch"], "c100", cfg)
    assert cache.hits == 1 and cache.misses == 0
    assert got["meta"]["arch"] == autoformer_bench.records[0]["arch"]
    assert got["blocks"][0]["msa_a"].shape[0] == 2


def test_extract_runner_bad_space(runner_runs):
    bad = runner_runs["bad"]
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1, bad.stderr
    assert "--space nope" in lines[0] and lines[0].startswith("error:")
    assert bad.stdout == ""
    assert not list(runner_runs["bad_dir"].rglob("*.joblib"))
