"""Hand-crafted zero-cost proxies of the literature, one small function each, registered by name.

Every proxy has the signature ``fn(model, images, labels, scope="all") -> float`` and

* leaves the caller's model as it was: weights are never written (synflow works on a deep copy),
  and gradients are taken with ``torch.autograd.grad``, so no ``.grad`` is read from or left on
  the caller's parameters (which also makes every backward pass start from zero gradients);
* runs on the device of the model, in whatever train/eval mode the caller left it (the search
  spaces have no dropout, so the model is simply called on the batch);
* returns a Python float, ``float('nan')`` when the value is NaN or infinite.

``scope`` picks the weight groups the gradient/weight proxies sum over (see `weight_groups`):
``"all"`` makes every parameter with dim >= 2 its own group, the practice of the zero-cost suites;
``"blocks"`` keeps the two weight groups of each transformer block, MSA = [qkv, proj] and
MLP = [fc1, fc2]. Where a proxy needs a group as one matrix (nuclear norms), the group's matrices
are stacked as rows over the model width D: MSA -> cat([qkv, proj]) of shape (4D, D),
MLP -> cat([fc1, fc2.t()]) of shape (2H, D); a single weight is reshaped to (shape[0], -1).

Two attention details: timm's fused CPU attention kernel has no double backward and is not
counted by ``FlopCounterMode``, so grasp and flops run with the math SDPA backend (same function,
unfused kernels).
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from vit_space.errors import BadInput
from vit_space.models import transformer_blocks

SCOPES = ("all", "blocks")


@dataclass(frozen=True)
class Baseline:
    name: str
    fn: Callable
    needs_data: bool
    description: str


BASELINES: dict = {}


def register_baseline(name: str, needs_data: bool = True, description: str = ""):
    """Decorator registering ``fn(model, images, labels, scope="all") -> float`` under NAME."""
    def wrap(fn):
        BASELINES[name] = Baseline(name, fn, needs_data, description or (fn.__doc__ or "").strip())
        return fn
    return wrap


def score_baseline(name: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   scope: str = "all") -> float:
    """Score MODEL with the baseline registered as NAME (BadInput, a ValueError, if unknown)."""
    if name not in BASELINES:
        raise BadInput(f"unknown baseline {name!r} (expected one of {', '.join(BASELINES)})")
    return BASELINES[name].fn(model, images, labels, scope=scope)


# ---------------------------------------------------------------- weight groups and helpers

def _labelled_groups(model: nn.Module, scope: str) -> list:
    """(kind, params) per group; kind is "msa", "mlp" (transformer-block weights) or "other"."""
    if scope not in SCOPES:
        raise BadInput(f"scope {scope!r}: unknown (expected one of {', '.join(SCOPES)})")
    blocks = transformer_blocks(model)
    if scope == "blocks":
        out = []
        for b in blocks:
            out.append(("msa", [b.attn.qkv.weight, b.attn.proj.weight]))
            out.append(("mlp", [b.mlp.fc1.weight, b.mlp.fc2.weight]))
        return out
    kind = {}
    for b in blocks:
        kind.update({id(b.attn.qkv.weight): "msa", id(b.attn.proj.weight): "msa",
                     id(b.mlp.fc1.weight): "mlp", id(b.mlp.fc2.weight): "mlp"})
    return [(kind.get(id(p), "other"), [p]) for p in model.parameters() if p.dim() >= 2]


def weight_groups(model: nn.Module, scope: str = "all") -> list:
    """The weight groups (lists of parameters) a gradient/weight proxy sums over for SCOPE."""
    return [params for _, params in _labelled_groups(model, scope)]


def group_matrix(tensors: list, kind: str) -> torch.Tensor:
    """A group's tensors (weights or their grads) as one matrix, rows stacked over the width."""
    if len(tensors) == 1:
        return tensors[0].reshape(tensors[0].shape[0], -1)
    if kind == "mlp":  # [fc1 (H, D), fc2 (D, H)] -> (2H, D)
        return torch.cat([tensors[0], tensors[1].t()], 0)
    return torch.cat(list(tensors), 0)  # [qkv (3D, D), proj (D, D)] -> (4D, D)


def _flat(tensors: list) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _float(x) -> float:
    x = float(x)
    return x if x == x and abs(x) != float("inf") else float("nan")


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _grads(model, images, labels, params, create_graph=False):
    """d cross-entropy(model(images), labels) / d params, without touching any ``.grad``."""
    dev = _device(model)
    with torch.enable_grad():
        loss = F.cross_entropy(model(images.to(dev)), labels.to(dev))
        grads = torch.autograd.grad(loss, params, create_graph=create_graph, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


_SHARED: Optional[dict] = None  # gradient passes shared inside `shared_passes()`


@contextlib.contextmanager
def shared_passes():
    """Within this block, proxies that need the same cross-entropy gradients of the same model and
    batch (grad_norm, snip, dss) share one backward pass. Only for a model that is not modified
    inside the block (as when scoring one arch with several proxies)."""
    global _SHARED
    outer, _SHARED = _SHARED, {}
    try:
        yield
    finally:
        _SHARED = outer


def _group_grads(model, images, labels, scope):
    """(kind, weights, grads) per group from one backward pass of the cross-entropy."""
    key = (id(model), id(images), id(labels), scope)
    if _SHARED is not None and key in _SHARED:
        return _SHARED[key]
    result = _compute_group_grads(model, images, labels, scope)
    if _SHARED is not None:
        _SHARED[key] = result
    return result


def _compute_group_grads(model, images, labels, scope):
    groups = _labelled_groups(model, scope)
    params = [p for _, ps in groups for p in ps]
    grads = iter(_grads(model, images, labels, params))
    return [(kind, [p.detach() for p in ps], [next(grads).detach() for _ in ps])
            for kind, ps in groups]


def _capture(modules, pre: bool = False):
    """Register hooks storing each module's output (or first input if PRE) in a list."""
    store, handles = [], []
    for m in modules:
        if pre:
            handles.append(m.register_forward_pre_hook(lambda mod, args: store.append(args[0])))
        else:
            handles.append(m.register_forward_hook(lambda mod, args, out: store.append(out)))
    return store, handles


# ---------------------------------------------------------------- the proxies

@register_baseline("params", needs_data=False)
def params(model, images, labels, scope="all"):
    """Parameter count (scope "blocks": elements of the blocks' weight groups)."""
    if scope == "all":
        return float(sum(p.numel() for p in model.parameters()))
    return float(sum(p.numel() for g in weight_groups(model, scope) for p in g))


@register_baseline("flops", needs_data=False)
def flops(model, images, labels, scope="all"):
    """Forward FLOPs of one image of the batch's size (FlopCounterMode: multiply-add = 2 FLOPs)."""
    weight_groups(model, scope)  # validates the scope; FLOPs are always of the whole model
    x = torch.zeros(1, *images.shape[1:], device=_device(model))
    # not under no_grad: FlopCounterMode's module tracker fails on PiT's tuples there
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x)
    return _float(counter.get_total_flops())


@register_baseline("grad_norm")
def grad_norm(model, images, labels, scope="all"):
    """Gradient norm (Abdelfattah et al., ICLR 2021): sum over groups of ||dL/dW||_F."""
    return _float(sum(_flat(g).norm() for _, _, g in _group_grads(model, images, labels, scope)))


@register_baseline("snip")
def snip(model, images, labels, scope="all"):
    """SNIP (Lee et al., ICLR 2019): sum of |w * dL/dw|."""
    groups = _group_grads(model, images, labels, scope)
    return _float(sum((_flat(w) * _flat(g)).abs().sum() for _, w, g in groups))


@register_baseline("grasp")
def grasp(model, images, labels, scope="all"):
    """GraSP (Wang et al., ICLR 2020): -sum(w * Hg), with Hg the Hessian-gradient product."""
    ws = [p for g in weight_groups(model, scope) for p in g]
    with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
        grads = _grads(model, images, labels, ws, create_graph=True)
        z = sum((g * g.detach()).sum() for g in grads)
        hg = torch.autograd.grad(z, ws, allow_unused=True)
    return _float(-sum((w.detach() * h).sum() for w, h in zip(ws, hg) if h is not None))


@register_baseline("fisher")
def fisher(model, images, labels, scope="all"):
    """Fisher (Turner et al., ICLR 2020): 0.5 * E_batch sum_D (sum_tokens a * dL/da)^2 over modules."""
    weight_groups(model, scope)  # validates the scope; the proxy always uses every block's modules
    mods = [m for b in transformer_blocks(model) for m in (b.attn, b.mlp)]
    acts, handles = _capture(mods)
    dev = _device(model)
    try:
        with torch.enable_grad():
            loss = F.cross_entropy(model(images.to(dev)), labels.to(dev))
            gs = torch.autograd.grad(loss, acts)
    finally:
        for h in handles:
            h.remove()
    total = 0.0
    for a, g in zip(acts, gs):
        s = (a.detach() * g).sum(dim=1)  # (B, D)
        total = total + 0.5 * s.pow(2).sum(dim=1).mean()
    return _float(total)


@register_baseline("synflow", needs_data=False)
def synflow(model, images, labels, scope="all"):
    """SynFlow (Tanaka et al., NeurIPS 2020): sum |w * dR/dw| on |weights| in float64, input of ones."""
    net = copy.deepcopy(model).double()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    ws = [p for g in weight_groups(net, scope) for p in g]
    x = torch.ones(1, *images.shape[1:], dtype=torch.float64, device=_device(net))
    with torch.enable_grad():
        gs = torch.autograd.grad(net(x).sum(), ws, allow_unused=True)
    return _float(sum((w.detach() * g).abs().sum() for w, g in zip(ws, gs) if g is not None))


@register_baseline("jacob_cov")
def jacob_cov(model, images, labels, scope="all"):
    """Jacobian covariance (Mellor et al., arXiv 2020 v1 of NASWOT): eigen-spectrum of corrcoef of input Jacobians."""
    if images.shape[0] < 2:
        return float("nan")
    x = images.detach().to(_device(model)).clone().requires_grad_(True)
    with torch.enable_grad():
        (jac,) = torch.autograd.grad(model(x).sum(), x)
    corr = torch.corrcoef(jac.reshape(jac.shape[0], -1).double())
    v = torch.linalg.eigvalsh(corr)
    return _float(-torch.sum(torch.log(v + 1e-5) + 1.0 / (v + 1e-5)))


def nwot_codes(model, images) -> torch.Tensor:
    """Binary codes (B x F): sign pattern of each block's MLP activation input, over all blocks."""
    inputs, handles = _capture([b.mlp.act for b in transformer_blocks(model)], pre=True)
    try:
        with torch.no_grad():
            model(images.to(_device(model)))
    finally:
        for h in handles:
            h.remove()
    return torch.cat([(a > 0).reshape(a.shape[0], -1) for a in inputs], 1).double()


@register_baseline("nwot")
def nwot(model, images, labels, scope="all"):
    """NASWOT (Mellor et al., ICML 2021): log|det K| of the Hamming kernel of activation codes."""
    c = nwot_codes(model, images)
    k = c @ c.t() + (1 - c) @ (1 - c).t()
    return _float(torch.linalg.slogdet(k).logabsdet)


@register_baseline("dss")
def dss(model, images, labels, scope="all"):
    """DSS-indicator of TF-TAS (Zhou et al., CVPR 2022): MSA ||G||_nuc*||W||_nuc + MLP sum|w*g|."""
    total = 0.0
    for kind, w, g in _group_grads(model, images, labels, scope):
        if kind == "msa":
            total = total + (torch.linalg.matrix_norm(group_matrix(g, kind), "nuc")
                             * torch.linalg.matrix_norm(group_matrix(w, kind), "nuc"))
        else:
            total = total + (_flat(w) * _flat(g)).abs().sum()
    return _float(total)


@register_baseline("zico")
def zico(model, images, labels, scope="all"):
    """ZiCo (Li et al., ICLR 2023): sum over groups of log sum(E|g| / std(g)) over 2 batch halves."""
    n = images.shape[0]
    if n < 2:
        return float("nan")
    groups = weight_groups(model, scope)
    params = [p for g in groups for p in g]
    halves = [(images[: n // 2], labels[: n // 2]), (images[n // 2:], labels[n // 2:])]
    per_half = [[g.detach() for g in _grads(model, x, y, params)] for x, y in halves]
    total, i = 0.0, 0
    for g in groups:
        stacked = torch.stack([_flat(h[i:i + len(g)]) for h in per_half])  # (2, elements)
        i += len(g)
        std = stacked.std(dim=0, unbiased=False)
        ratio = stacked.abs().mean(dim=0)[std > 0] / std[std > 0]
        if ratio.numel() and ratio.sum() > 0:
            total = total + torch.log(ratio.sum())
    return _float(total)
