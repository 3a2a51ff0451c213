"""The literature's zero-cost proxies on tiny (32 px, 2x2 patches) AutoFormer and PiT models.

Registry, flags and invariants for every proxy; the count, gradient and kernel proxies are also
checked against independent manual computations from one ordinary ``loss.backward()``.
"""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from vit_space.data.bench import PACKAGED_BENCH
from vit_space.models.builders import build_model, transformer_blocks
from vit_space.scoring.baselines import (BASELINES, Baseline, SharedPass, nwot_codes, register_baseline,
                                 register_shared, score_baseline, score_baselines, weight_groups)

BENCH = PACKAGED_BENCH
SPACES = ("autoformer", "pit")
IMG, BATCH, CLASSES = 32, 4, 100
EXPECTED = {"params": False, "flops": False, "grad_norm": True, "snip": True, "grasp": True,
            "fisher": True, "synflow": False, "jacob_cov": True, "nwot": True, "dss": True,
            "zico": True}


def arch(space):
    return json.loads((BENCH / f"{space}.json").read_text())[0]["arch"]


def model_of(space):
    return build_model(space, arch(space), CLASSES, img_size=IMG)


def batch(seed=0):
    try:
        from vit_space.data.batches import synthetic_batch
        return synthetic_batch("c100", BATCH, IMG, seed)
    except ImportError:  # a concurrent edit of batches/datasets in progress
        gen = torch.Generator().manual_seed(seed)
        return (torch.randn(BATCH, 3, IMG, IMG, generator=gen),
                torch.randint(0, CLASSES, (BATCH,), generator=gen))


@pytest.fixture(scope="module")
def models():
    return {space: model_of(space) for space in SPACES}


def manual_grads(model, images, labels):
    """Gradients from a plain backward pass; the model's .grad are cleared again afterwards."""
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(images), labels).backward()
    grads = {id(p): p.grad.detach().clone() for p in model.parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def close(a, b, rel=1e-4):
    return a == pytest.approx(b, rel=rel)


# ---------------------------------------------------------------- registry

def test_registry_names_and_flags():
    assert set(BASELINES) == set(EXPECTED)
    for name, needs in EXPECTED.items():
        b = BASELINES[name]
        assert isinstance(b, Baseline) and b.name == name
        assert b.needs_data is needs, name
        assert b.description


def test_register_decorator_adds_an_entry():
    @register_baseline("_test_const", needs_data=False, description="constant")
    def const(model, images, labels, scope="all"):
        return 3.0
    try:
        assert BASELINES["_test_const"] == Baseline("_test_const", const, False, "constant")
        assert score_baseline("_test_const", None, None, None) == 3.0
    finally:
        del BASELINES["_test_const"]


def test_unknown_name_is_named_in_the_error(models):
    images, labels = batch()
    with pytest.raises((KeyError, ValueError), match="no_such_proxy"):
        score_baseline("no_such_proxy", models["pit"], images, labels)


def test_unknown_scope_raises(models):
    with pytest.raises(ValueError, match="heads"):
        weight_groups(models["pit"], "heads")


@pytest.mark.parametrize("space", SPACES)
def test_weight_groups(models, space):
    model = models[space]
    blocks = transformer_blocks(model)
    groups = weight_groups(model, "blocks")
    assert len(groups) == 2 * len(blocks)
    for b, msa, mlp in zip(blocks, groups[0::2], groups[1::2]):
        assert msa[0] is b.attn.qkv.weight and msa[1] is b.attn.proj.weight
        assert mlp[0] is b.mlp.fc1.weight and mlp[1] is b.mlp.fc2.weight
    every = weight_groups(model, "all")
    assert all(len(g) == 1 and g[0].dim() >= 2 for g in every)
    assert len(every) == sum(p.dim() >= 2 for p in model.parameters())


# ---------------------------------------------------------------- invariants of every proxy

@pytest.mark.parametrize("space", SPACES)
@pytest.mark.parametrize("scope", ["all", "blocks"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_finite_deterministic_and_model_untouched(models, space, scope, name):
    model = models[space]
    images, labels = batch()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first = score_baseline(name, model, images, labels, scope=scope)
    second = score_baseline(name, model, images, labels, scope=scope)
    assert type(first) is float and math.isfinite(first), (name, first)
    assert first == second
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), name
    assert all(p.grad is None for p in model.parameters()), "a proxy left gradients behind"
    assert model.training  # the mode the builder left is kept


@pytest.mark.parametrize("name", ["jacob_cov", "zico"])
def test_batch_of_one_gives_nan_not_an_error(models, name):
    images, labels = batch()
    assert math.isnan(score_baseline(name, models["pit"], images[:1], labels[:1]))


# ---------------------------------------------------------------- against manual computations

@pytest.mark.parametrize("space", SPACES)
def test_params_hand_count(models, space):
    model = models[space]
    images, labels = batch()
    assert score_baseline("params", model, images, labels, "all") == sum(
        p.numel() for p in model.parameters())
    by_hand = sum(b.attn.qkv.weight.numel() + b.attn.proj.weight.numel()
                  + b.mlp.fc1.weight.numel() + b.mlp.fc2.weight.numel()
                  for b in transformer_blocks(model))
    assert score_baseline("params", model, images, labels, "blocks") == by_hand


def test_flops_autoformer_hand_count(models):
    """2 FLOPs per multiply-add over the patch conv, every Linear and both attention matmuls."""
    a = arch("autoformer")
    d, n_patch = a["hidden_dim"], (IMG // 16) ** 2
    tokens = n_patch + 1
    total = 2 * n_patch * (3 * 16 * 16) * d + 2 * d * CLASSES
    for ratio in a["mlp_ratio"]:
        hidden = int(d * ratio)
        total += 2 * tokens * (3 * d * d + d * d + 2 * d * hidden)  # qkv, proj, fc1, fc2
        total += 2 * 2 * tokens * tokens * d  # q k^T and attn v
    images, labels = batch()
    assert score_baseline("flops", models["autoformer"], images, labels) == total
    bigger = torch.zeros(1, 3, 2 * IMG, 2 * IMG)
    big_model = build_model("autoformer", a, CLASSES, img_size=2 * IMG)
    assert score_baseline("flops", big_model, bigger, None) > total


@pytest.mark.parametrize("space", SPACES)
def test_grad_norm_and_snip_match_manual(space):
    model = model_of(space)
    images, labels = batch()
    g = manual_grads(model, images, labels)
    norm = snip = 0.0
    for b in transformer_blocks(model):
        for pair in ((b.attn.qkv.weight, b.attn.proj.weight), (b.mlp.fc1.weight, b.mlp.fc2.weight)):
            norm += math.sqrt(sum(float((g[id(p)] ** 2).sum()) for p in pair))
            snip += sum(float((p.detach() * g[id(p)]).abs().sum()) for p in pair)
    assert close(score_baseline("grad_norm", model, images, labels, "blocks"), norm)
    assert close(score_baseline("snip", model, images, labels, "blocks"), snip)
    all_norm = sum(float(g[id(p)].norm()) for p in model.parameters() if p.dim() >= 2)
    assert close(score_baseline("grad_norm", model, images, labels, "all"), all_norm)


@pytest.mark.parametrize("space", SPACES)
def test_dss_matches_manual_nuclear_norms(space):
    model = model_of(space)
    images, labels = batch()
    g = manual_grads(model, images, labels)
    nuc = lambda m: float(torch.linalg.matrix_norm(m, "nuc"))
    blocks, msa_ids, manual_all = 0.0, set(), 0.0
    for b in transformer_blocks(model):
        qkv, proj, fc1, fc2 = b.attn.qkv.weight, b.attn.proj.weight, b.mlp.fc1.weight, b.mlp.fc2.weight
        w_msa = torch.cat([qkv.detach(), proj.detach()], 0)
        g_msa = torch.cat([g[id(qkv)], g[id(proj)]], 0)
        assert w_msa.shape == (4 * qkv.shape[1], qkv.shape[1])
        blocks += nuc(g_msa) * nuc(w_msa)
        blocks += sum(float((p.detach() * g[id(p)]).abs().sum()) for p in (fc1, fc2))
        msa_ids |= {id(qkv), id(proj)}
    for p in model.parameters():
        if p.dim() < 2:
            continue
        if id(p) in msa_ids:
            manual_all += nuc(g[id(p)]) * nuc(p.detach())
        else:
            manual_all += float((p.detach() * g[id(p)]).abs().sum())
    assert close(score_baseline("dss", model, images, labels, "blocks"), blocks)
    assert close(score_baseline("dss", model, images, labels, "all"), manual_all)


def test_fisher_matches_retain_grad_computation():
    model = model_of("autoformer")
    images, labels = batch()
    acts = []

    def keep(module, args, out):
        out.retain_grad()
        acts.append(out)
    handles = [m.register_forward_hook(keep)
               for b in transformer_blocks(model) for m in (b.attn, b.mlp)]
    F.cross_entropy(model(images), labels).backward()
    for h in handles:
        h.remove()
    model.zero_grad(set_to_none=True)
    manual = sum(0.5 * float(((a.detach() * a.grad).sum(1) ** 2).sum(1).mean()) for a in acts)
    assert len(acts) == 2 * len(transformer_blocks(model))
    assert manual > 0
    assert close(score_baseline("fisher", model, images, labels), manual)


def test_zico_matches_two_half_batch_backwards():
    model = model_of("pit")
    images, labels = batch()
    halves = [manual_grads(model, images[:2], labels[:2]),
              manual_grads(model, images[2:], labels[2:])]
    manual = 0.0
    for group in weight_groups(model, "blocks"):
        g = torch.stack([torch.cat([h[id(p)].flatten() for p in group]) for h in halves])
        s = (g[0] - g[1]).abs() / 2  # population std of two values
        keep = s > 0
        if keep.any():
            manual += math.log(float((g.abs().mean(0)[keep] / s[keep]).sum()))
    assert close(score_baseline("zico", model, images, labels, "blocks"), manual)


def test_synflow_ignores_weight_signs_and_data():
    model = model_of("pit")
    images, labels = batch()
    ref = score_baseline("synflow", model, images, labels)
    assert ref > 0
    assert score_baseline("synflow", model, images * 7 + 3, labels.flip(0)) == ref
    flipped = model_of("pit")
    with torch.no_grad():
        for b in transformer_blocks(flipped):
            b.mlp.fc1.weight.neg_()
    assert close(score_baseline("synflow", flipped, images, labels), ref, rel=1e-9)


# ---------------------------------------------------------------- nwot kernel

@pytest.mark.parametrize("space", SPACES)
def test_nwot_identical_images_give_a_degenerate_kernel(models, space):
    model = models[space]
    images, labels = batch()
    same = images[:1].expand(BATCH, -1, -1, -1).contiguous()
    codes = nwot_codes(model, same)
    assert torch.equal(codes, codes[:1].expand_as(codes))
    k = codes @ codes.t() + (1 - codes) @ (1 - codes).t()
    assert torch.all(k == codes.shape[1])  # every entry equal: rank one
    distinct = score_baseline("nwot", model, images, labels)
    degenerate = score_baseline("nwot", model, same, labels)
    assert math.isfinite(distinct) and distinct > 0
    assert math.isnan(degenerate) or degenerate < distinct - 20


def test_nwot_is_logdet_of_hamming_kernel(models):
    model = models["autoformer"]
    images, labels = batch()
    codes = nwot_codes(model, images)
    pre = []  # fc1's output is what mlp.act receives
    handles = [b.mlp.fc1.register_forward_hook(lambda m, args, out: pre.append(out.detach()))
               for b in transformer_blocks(model)]
    with torch.no_grad():
        model(images)
    for h in handles:
        h.remove()
    manual = torch.cat([(a > 0).reshape(BATCH, -1) for a in pre], 1).double()
    assert torch.equal(codes, manual)
    n_feat = codes.shape[1]
    hamming = torch.cdist(codes, codes, p=1)
    k = n_feat - hamming
    assert torch.all(torch.diag(k) == n_feat)
    assert close(score_baseline("nwot", model, images, labels), float(torch.logdet(k)), rel=1e-9)


# ---------------------------------------------------------------- the shared path

@pytest.mark.parametrize("space", SPACES)
@pytest.mark.parametrize("scope", ["all", "blocks"])
def test_shared_path_equals_each_baseline_alone(space, scope):
    model = model_of(space)
    images, labels = batch()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    alone = {name: score_baseline(name, model, images, labels, scope) for name in EXPECTED}
    # every baseline, GraSP sharing the pass (its math attention kernel), and single ones
    for names in (sorted(EXPECTED), ["grasp", "grad_norm", "fisher"], ["nwot"], ["zico", "jacob_cov"]):
        shared = score_baselines(names, model, images, labels, scope)
        assert list(shared) == names
        for name in names:
            assert type(shared[name]) is float and close(shared[name], alone[name], rel=1e-5), (name, names)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_shared_pass_runs_the_batch_once():
    model = model_of("autoformer")
    images, labels = batch()
    seen = []
    model.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[0]))
    every = {n for b in BASELINES.values() for n in b.uses} - {"hessian"}
    SharedPass(model, images, labels, every)
    assert seen == [BATCH // 2, BATCH - BATCH // 2]  # one forward per half, nothing else
    seen.clear()
    SharedPass(model, images, labels, {"grads", "acts", "codes", "jacobian", "hessian"})
    assert seen == [BATCH]
    with pytest.raises(ValueError, match="part"):
        register_shared("nwot", "no_such_part")


def test_baseline_scores_counts_and_shares_and_caches(tmp_path, monkeypatch):
    from vit_space.scoring.baseline_scores import baseline_scores
    from vit_space.stats.statistics import StatsConfig
    cfg = StatsConfig(batch_size=BATCH, img_size=IMG, seed=0)
    archs = [json.loads((BENCH / "autoformer.json").read_text())[i]["arch"] for i in (0, 1)]
    names = ["params", "flops", "snip", "nwot", "zico"]
    got = baseline_scores(names, "autoformer", archs, ["c100"], cfg, tmp_path, progress=False)
    images, labels = batch()
    for i, a in enumerate(archs):
        model = build_model("autoformer", a, CLASSES, img_size=IMG)
        for name in names:
            assert close(got[name]["c100"][i], score_baseline(name, model, images, labels), rel=1e-5)
    import vit_space.scoring.baseline_scores as module
    monkeypatch.setattr(module, "build_model", lambda *a, **k: pytest.fail("cached values recomputed"))
    again = baseline_scores(names, "autoformer", archs, ["c100"], cfg, tmp_path, progress=False)
    assert all((again[n]["c100"] == got[n]["c100"]).all() for n in names)


def test_grasp_shares_the_pass_unless_zico_needs_the_fused_kernel():
    from vit_space.scoring.baselines import shared_names
    assert "grasp" not in shared_names(sorted(EXPECTED))
    assert shared_names(["grasp", "snip", "synflow"]) == ["grasp", "snip"]
    assert set(shared_names(sorted(EXPECTED))) == {"grad_norm", "snip", "fisher", "jacob_cov",
                                                   "nwot", "dss", "zico"}
