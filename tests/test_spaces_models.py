"""The two search spaces (validation, samplers) and the models built from their arch records.

Parameter counts are checked against a closed form written out here from the authors' model
description (README of ViT-Bench-101), not against anything computed by the library.
"""
import copy
import random

import pytest
import torch
import torch.nn.functional as F

from vit_space.core.errors import BadInput
from vit_space.data.spaces import SPACES, AutoFormerSpace, PiTSpace, arch_seed, get_space
from vit_space.models.builders import build_model, transformer_blocks


def af_arch(dim, ratios, heads):
    assert len(ratios) == len(heads)
    return {"hidden_dim": dim, "depth": len(ratios), "mlp_ratio": list(ratios), "num_heads": list(heads)}


AF_ARCHS = [
    af_arch(192, [4.0] * 12, [3] * 12),                                  # uniform
    af_arch(216, [3.5, 4.0] * 6 + [3.5], [4, 3] * 6 + [4]),              # mixed ratios, depth 13
    af_arch(240, [3.5] * 7 + [4.0] * 7, [3, 4] * 7),                     # mixed, deepest, widest
    af_arch(240, [3.5] * 12, [4] * 12),                                  # D*3.5 = 840
]


def autoformer_param_count(arch, img_size, num_classes):
    """Closed-form parameter count of an AutoFormer subnet (patch 16, cls token, learned pos)."""
    D = arch["hidden_dim"]
    N = (img_size // 16) ** 2
    total = 3 * 16 * 16 * D + D          # patch-embedding conv (weight + bias)
    total += D                           # class token
    total += (N + 1) * D                 # position embedding
    for ratio in arch["mlp_ratio"]:
        H = int(D * ratio)
        total += 4 * D                   # two LayerNorms
        total += 3 * D * D + 3 * D       # qkv
        total += D * D + D               # attention projection
        total += H * D + H               # fc1
        total += D * H + D               # fc2
    total += 2 * D                       # final LayerNorm
    total += D * num_classes + num_classes  # head
    return total


def n_params(model):
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- parameter counts

@pytest.mark.parametrize("arch", AF_ARCHS, ids=["uniform", "mixed13", "mixed14", "dim240"])
@pytest.mark.parametrize("img_size,num_classes", [(224, 1000), (32, 100)])
def test_autoformer_param_count_closed_form(arch, img_size, num_classes):
    model = build_model("autoformer", arch, num_classes, img_size)
    assert n_params(model) == autoformer_param_count(arch, img_size, num_classes)


def test_autoformer_param_count_bench_arch_and_known_value(autoformer_bench):
    arch = autoformer_bench.records[0]["arch"]
    model = build_model("autoformer", arch, 100, 224)
    assert n_params(model) == autoformer_param_count(arch, 224, 100)
    # hand-evaluated once for the uniform D=192, 12 x (ratio 4) subnet at 224 px, 1000 classes
    assert autoformer_param_count(AF_ARCHS[0], 224, 1000) == 5717416


def test_autoformer_blocks_follow_the_record():
    arch = AF_ARCHS[1]
    blocks = transformer_blocks(build_model("autoformer", arch, 10, 32))
    assert len(blocks) == arch["depth"]
    for block, ratio, heads in zip(blocks, arch["mlp_ratio"], arch["num_heads"]):
        assert block.attn.num_heads == heads
        assert block.attn.qkv.weight.shape == (3 * 216, 216)
        assert block.attn.qkv.bias is not None
        assert block.mlp.fc1.out_features == int(216 * ratio)
        assert block.norm1.eps == pytest.approx(1e-6)


def test_pit_blocks_follow_the_record(pit_bench):
    for record in pit_bench.records[:5]:
        arch = record["arch"]
        blocks = transformer_blocks(build_model("pit", arch, 4, 32))
        widths = [arch["base_dim"] * h for h, d in zip(arch["num_heads"], arch["depth"]) for _ in range(d)]
        heads = [h for h, d in zip(arch["num_heads"], arch["depth"]) for _ in range(d)]
        assert len(blocks) == sum(arch["depth"])
        assert [b.attn.qkv.in_features for b in blocks] == widths
        assert [b.attn.num_heads for b in blocks] == heads
        assert [b.mlp.fc1.out_features for b in blocks] == [w * arch["mlp_ratio"] for w in widths]


# ---------------------------------------------------------------- deterministic initialisation

def _state_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("space", ["autoformer", "pit"])
def test_same_arch_same_weights_whatever_the_global_seed(space, autoformer_bench, pit_bench):
    arch = (autoformer_bench if space == "autoformer" else pit_bench).records[0]["arch"]
    torch.manual_seed(1)
    a = build_model(space, arch, 100, 32).state_dict()
    torch.manual_seed(2)
    b = build_model(space, copy.deepcopy(arch), 100, 32).state_dict()
    assert _state_equal(a, b)


def test_different_arch_different_weights():
    arch = AF_ARCHS[0]
    other = copy.deepcopy(arch)
    other["num_heads"][0] = 4  # same parameter shapes, different record -> different seed
    assert arch_seed("autoformer", arch) != arch_seed("autoformer", other)
    a = build_model("autoformer", arch, 100, 32).state_dict()
    b = build_model("autoformer", other, 100, 32).state_dict()
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    assert not torch.equal(a["blocks.0.attn.qkv.weight"], b["blocks.0.attn.qkv.weight"])
    assert not torch.equal(a["blocks.5.mlp.fc1.weight"], b["blocks.5.mlp.fc1.weight"])


def test_pit_different_arch_different_weights(pit_bench):
    arch = pit_bench.records[0]["arch"]
    other = copy.deepcopy(arch)
    other["mlp_ratio"] = 2 if arch["mlp_ratio"] != 2 else 4
    a = transformer_blocks(build_model("pit", arch, 100, 32))[0]
    b = transformer_blocks(build_model("pit", other, 100, 32))[0]
    assert not torch.equal(a.attn.qkv.weight, b.attn.qkv.weight)


@pytest.mark.parametrize("space", ["autoformer", "pit"])
def test_block_weights_independent_of_classes_and_image_size(space, autoformer_bench, pit_bench):
    arch = (autoformer_bench if space == "autoformer" else pit_bench).records[1]["arch"]
    ref = build_model(space, arch, 100, 32)
    for num_classes, img_size in ((4, 32), (100, 64), (4, 64)):
        other = build_model(space, arch, num_classes, img_size)
        ref_blocks, other_blocks = transformer_blocks(ref), transformer_blocks(other)
        assert len(ref_blocks) == len(other_blocks) > 0
        for a, b in zip(ref_blocks, other_blocks):
            assert _state_equal(a.state_dict(), b.state_dict())
        assert other.head.out_features == num_classes


def test_weights_are_initialised_as_documented():
    model = build_model("autoformer", AF_ARCHS[2], 100, 32)
    for block in transformer_blocks(model):
        for lin in (block.attn.qkv, block.attn.proj, block.mlp.fc1, block.mlp.fc2):
            w = lin.weight
            assert torch.count_nonzero(lin.bias) == 0
            assert 0.018 < w.std().item() < 0.022     # trunc-normal std 0.02 (timm cuts at +-2 absolute)
            assert abs(w.mean().item()) < 0.002
        assert torch.equal(block.norm1.weight, torch.ones_like(block.norm1.weight))
    assert model.pos_embed.abs().sum() > 0 and model.cls_token.abs().sum() > 0


@pytest.mark.parametrize("space", ["autoformer", "pit"])
def test_build_model_leaves_global_rng_alone(space, autoformer_bench, pit_bench):
    arch = (autoformer_bench if space == "autoformer" else pit_bench).records[2]["arch"]
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    expected = torch.rand(8)
    torch.set_rng_state(state)
    build_model(space, arch, 100, 32)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(torch.rand(8), expected)


# ---------------------------------------------------------------- forward + backward

@pytest.mark.parametrize("space", ["autoformer", "pit"])
@pytest.mark.parametrize("index,num_classes", [(0, 100), (7, 4), (42, 102)])
def test_forward_backward_at_32px(space, index, num_classes, autoformer_bench, pit_bench):
    arch = (autoformer_bench if space == "autoformer" else pit_bench).records[index]["arch"]
    model = build_model(space, arch, num_classes, 32)
    gen = torch.Generator().manual_seed(index)
    x = torch.randn(2, 3, 32, 32, generator=gen)
    y = torch.randint(0, num_classes, (2,), generator=gen)
    out = model(x)
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()
    F.cross_entropy(out, y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    for block in transformer_blocks(model):
        assert block.attn.qkv.weight.grad.abs().sum() > 0
        assert block.mlp.fc2.weight.grad.abs().sum() > 0


def test_build_model_validates_the_arch():
    bad = copy.deepcopy(AF_ARCHS[0])
    bad["hidden_dim"] = 200
    with pytest.raises(BadInput, match="hidden_dim"):
        build_model("autoformer", bad, 100, 32)
    with pytest.raises(BadInput, match="--space"):
        build_model("nope", AF_ARCHS[0], 100, 32)


# ---------------------------------------------------------------- samplers

def _values(space, arch):
    """(field, position) -> value, position None for scalar fields."""
    out = {}
    for key, value in arch.items():
        if isinstance(value, list):
            out.update({(key, i): v for i, v in enumerate(value)})
        else:
            out[(key, None)] = value
    return out


@pytest.mark.parametrize("name", ["autoformer", "pit"])
def test_samples_validate_and_cover_every_choice(name):
    space = get_space(name)
    seen = {}
    for s in range(400):
        rng = random.Random(s)
        for _ in range(5):
            arch = space.sample(rng)
            assert space.validate(copy.deepcopy(arch)) == arch
            for k, v in _values(space, arch).items():
                assert type(v) in (int, float)
                seen.setdefault(k, set()).add(v)
    # every (field, position) the space has, with every choice it allows there
    for field, pos, choices in space.genes():
        assert seen[(field, pos)] == set(choices), (field, pos)
    assert set(seen) == {(f, p) for f, p, _ in space.genes()}


@pytest.mark.parametrize("name", ["autoformer", "pit"])
def test_sampler_reproducible_per_seed(name):
    space = get_space(name)

    def draw(seed):
        rng = random.Random(seed)
        return [space.sample(rng) for _ in range(20)]

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)
    assert len({str(a) for a in draw(5)}) > 15  # samples within one stream vary


def test_autoformer_sample_lists_match_depth():
    space = AutoFormerSpace()
    rng = random.Random(0)
    depths = set()
    for _ in range(300):
        arch = space.sample(rng)
        depths.add(arch["depth"])
        assert len(arch["mlp_ratio"]) == len(arch["num_heads"]) == arch["depth"]
    assert depths == {12, 13, 14}


def test_registry():
    assert set(SPACES) == {"autoformer", "pit"}
    assert isinstance(get_space("autoformer"), AutoFormerSpace)
    assert isinstance(get_space("pit"), PiTSpace)
    with pytest.raises(BadInput, match="--space nope"):
        get_space("nope")


# ---------------------------------------------------------------- validate()

AF_OK = AF_ARCHS[1]
PIT_OK = {"base_dim": 24, "mlp_ratio": 4, "depth": [1, 6, 4], "num_heads": [2, 4, 8]}


def _with(arch, **changes):
    out = copy.deepcopy(arch)
    for key, value in changes.items():
        if value is _DROP:
            del out[key]
        else:
            out[key] = value
    return out


_DROP = object()


def _set_item(arch, key, i, value):
    out = copy.deepcopy(arch)
    out[key][i] = value
    return out


AF_BAD = [
    (_with(AF_OK, mlp_ratio=AF_OK["mlp_ratio"][:-1]), r"where\.mlp_ratio"),
    (_with(AF_OK, num_heads=AF_OK["num_heads"] + [3]), r"where\.num_heads"),
    (_with(AF_OK, num_heads=3), r"where\.num_heads"),
    (_with(AF_OK, hidden_dim=200), r"where\.hidden_dim"),
    (_with(AF_OK, depth=15), r"where\.depth"),
    (_with(AF_OK, depth="13"), r"where\.depth"),
    (_with(AF_OK, hidden_dim=True), r"where\.hidden_dim"),
    (_with(AF_OK, hidden_dim=192.0), r"where\.hidden_dim"),     # an int field given a float
    (_set_item(AF_OK, "num_heads", 4, 4.0), r"where\.num_heads\[4\]"),
    (_set_item(AF_OK, "mlp_ratio", 5, 3.0), r"where\.mlp_ratio\[5\]"),
    (_set_item(AF_OK, "num_heads", 12, 6), r"where\.num_heads\[12\]"),
    (_set_item(AF_OK, "mlp_ratio", 0, None), r"where\.mlp_ratio\[0\]"),
    (_with(AF_OK, depth=_DROP), r"where: missing field 'depth'"),
    (_with(AF_OK, hidden_dim=_DROP), r"where: missing field 'hidden_dim'"),
    (_with(AF_OK, embed_dim=192), r"where: unknown field 'embed_dim'"),
]

PIT_BAD = [
    (_with(PIT_OK, depth=[1, 6]), r"where\.depth"),
    (_with(PIT_OK, num_heads=[2, 4, 8, 8]), r"where\.num_heads"),
    (_with(PIT_OK, depth="1,6,4"), r"where\.depth"),
    (_with(PIT_OK, base_dim=48), r"where\.base_dim"),
    (_with(PIT_OK, mlp_ratio=3), r"where\.mlp_ratio"),
    (_with(PIT_OK, base_dim=24.0), r"where\.base_dim"),
    (_set_item(PIT_OK, "depth", 1, 3), r"where\.depth\[1\]"),       # 3 is a stage-0 choice only
    (_set_item(PIT_OK, "depth", 2, 6.0), r"where\.depth\[2\]"),
    (_set_item(PIT_OK, "num_heads", 0, 3), r"where\.num_heads\[0\]"),
    (_with(PIT_OK, num_heads=_DROP), r"where: missing field 'num_heads'"),
    (_with(PIT_OK, stride=8), r"where: unknown field 'stride'"),
]


@pytest.mark.parametrize("arch,pattern", AF_BAD, ids=[f"af{i}" for i in range(len(AF_BAD))])
def test_autoformer_validate_rejects(arch, pattern):
    AutoFormerSpace().validate(copy.deepcopy(AF_OK), where="where")  # the base record is fine
    with pytest.raises(BadInput, match=pattern):
        AutoFormerSpace().validate(arch, where="where")


@pytest.mark.parametrize("arch,pattern", PIT_BAD, ids=[f"pit{i}" for i in range(len(PIT_BAD))])
def test_pit_validate_rejects(arch, pattern):
    PiTSpace().validate(copy.deepcopy(PIT_OK), where="where")
    with pytest.raises(BadInput, match=pattern):
        PiTSpace().validate(arch, where="where")


@pytest.mark.parametrize("name", ["autoformer", "pit"])
@pytest.mark.parametrize("value", [[1, 2], "arch", None, 3])
def test_validate_rejects_non_dict(name, value):
    with pytest.raises(BadInput, match=r"^rec 7: expected an object"):
        get_space(name).validate(value, where="rec 7")


def test_validate_default_where_and_message_lists_choices():
    with pytest.raises(BadInput, match=r"^arch\.hidden_dim: 200 is outside the space .*192, 216, 240"):
        AutoFormerSpace().validate(_with(AF_OK, hidden_dim=200))


def test_validate_returns_the_record_unchanged():
    arch = copy.deepcopy(AF_OK)
    assert AutoFormerSpace().validate(arch) is arch and arch == AF_OK
    # the bench writes mlp_ratio 4.0; an int 4 is the same ratio and stays accepted
    AutoFormerSpace().validate(_set_item(AF_OK, "mlp_ratio", 0, 4))
