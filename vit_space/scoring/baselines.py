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

Scoring many baselines of one model and batch (`score_baselines`): each data-dependent baseline
whose definition allows it also has a *shared form* that reads one `SharedPass` (one forward per
batch half, one cross-entropy backward, one input-Jacobian backward) instead of running its own
passes; each value is the alone value up to float rounding (tests compare them).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from vit_space.core.errors import BadInput
from vit_space.models.builders import transformer_blocks
from vit_space.models.costs import forward_flops

SCOPES = ("all", "blocks")


@dataclass(frozen=True)
class Baseline:
    name: str
    fn: Callable
    needs_data: bool
    description: str
    shared: Optional[Callable] = None  # shared(SharedPass, scope) -> float, the same value
    uses: frozenset = frozenset()  # the SharedPass parts the shared form reads


BASELINES: dict = {}


def register_baseline(name: str, needs_data: bool = True, description: str = ""):
    """Decorator registering ``fn(model, images, labels, scope="all") -> float`` under NAME."""
    def wrap(fn):
        BASELINES[name] = Baseline(name, fn, needs_data, description or (fn.__doc__ or "").strip())
        return fn
    return wrap


def register_shared(name: str, *uses: str):
    """Decorator adding to baseline NAME its shared form ``fn(shared_pass, scope) -> float``, which
    reads the SharedPass parts USES (see SharedPass.PARTS)."""
    unknown = set(uses) - set(SharedPass.PARTS)
    if unknown:
        raise ValueError(f"unknown SharedPass part(s) {sorted(unknown)}")

    def wrap(fn):
        BASELINES[name] = dataclasses.replace(BASELINES[name], shared=fn, uses=frozenset(uses))
        return fn
    return wrap


def _check_names(names) -> None:
    for name in names:
        if name not in BASELINES:
            raise BadInput(f"unknown baseline {name!r} (expected one of {', '.join(BASELINES)})")


def score_baseline(name: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   scope: str = "all") -> float:
    """Score MODEL with the baseline registered as NAME (BadInput, a ValueError, if unknown)."""
    _check_names([name])
    return BASELINES[name].fn(model, images, labels, scope=scope)


def shared_names(names: Sequence[str]) -> list:
    """Which of NAMES read the SharedPass when scored together (the others run alone)."""
    sharing = [n for n in names if BASELINES[n].shared]
    if any("halves" in BASELINES[n].uses for n in sharing):
        # GraSP's pass needs the math attention kernel, whose rounding ZiCo's mean/std ratios
        # amplify (~1e-3 relative): with ZiCo, GraSP keeps its own pass (the same count of passes)
        sharing = [n for n in sharing if "hessian" not in BASELINES[n].uses]
    return sharing


def score_baselines(names: Sequence[str], model: nn.Module, images: torch.Tensor,
                    labels: torch.Tensor, scope: str = "all") -> dict:
    """{name: score} for several baselines of one model and batch: the shared forms read one
    SharedPass holding only the parts they use; the others run alone."""
    _check_names(names)
    weight_groups(model, scope)  # validates the scope before any pass
    sharing = shared_names(names)
    uses = set().union(*(BASELINES[n].uses for n in sharing))
    shared = SharedPass(model, images, labels, uses, scope) if uses else None
    return {n: (BASELINES[n].shared(shared, scope) if n in sharing
                else BASELINES[n].fn(model, images, labels, scope=scope)) for n in names}


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


def _group_grads(model, images, labels, scope):
    """(kind, weights, grads) per group from one backward pass of the cross-entropy."""
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


def _modules(model) -> list:
    """The modules whose outputs fisher reads: every block's MSA and MLP, in forward order."""
    return [m for b in transformer_blocks(model) for m in (b.attn, b.mlp)]


def _halves(images, labels) -> list:
    n = images.shape[0]
    return [(images[: n // 2], labels[: n // 2]), (images[n // 2:], labels[n // 2:])]


# ---------------------------------------------------------------- one shared pass

class SharedPass:
    """What the data-dependent baselines read, from one model and batch, in as few passes as their
    definitions allow. PARTS: "grads" (cross-entropy gradients of every weight matrix), "halves"
    (the same per batch half, for ZiCo), "acts" (the MSA/MLP outputs and their cross-entropy
    gradients, for fisher), "codes" (NWOT's activation codes), "jacobian" (d sum(logits) / d input),
    "hessian" (GraSP's -sum(w * Hg) over the weights of `scope`).

    With "halves", each half gets one forward and one backward; the full-batch gradients are the
    halves' gradients weighted by their share of the batch (the mean cross-entropy is the weighted
    mean of the halves', and no model here mixes samples), so the batch is run once in all.
    The input Jacobian needs its own backward (another loss), on the same forward. With "hessian"
    the forward runs with the math attention kernel and the cross-entropy backward keeps its graph
    for GraSP's second backward, so GraSP adds one backward instead of a pass of its own."""

    PARTS = ("grads", "halves", "acts", "codes", "jacobian", "hessian")

    def __init__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, uses,
                 scope: str = "all"):
        self.model, self.uses, self.scope, n = model, set(uses), scope, images.shape[0]
        dev = _device(model)
        self.params = [p for p in model.parameters() if p.dim() >= 2]
        second = "hessian" in self.uses
        cross_entropy = bool(self.uses & {"grads", "halves", "acts"}) or second
        graph_grads = [0.0] * len(self.params)
        chunks = _halves(images, labels) if "halves" in self.uses and n >= 2 else [(images, labels)]
        self.grads = [torch.zeros_like(p) for p in self.params] if cross_entropy else None
        self.half_grads, acts, act_grads, codes, jacobian = [], [], [], [], []
        for x, y in chunks:
            share = x.shape[0] / n
            x = x.detach().to(dev)
            if "jacobian" in self.uses:
                x = x.clone().requires_grad_(True)
            outs, h_outs = _capture(_modules(model) if "acts" in self.uses else [])
            pre, h_pre = _capture([b.mlp.act for b in transformer_blocks(model)]
                                  if "codes" in self.uses else [], pre=True)
            kernel = sdpa_kernel(SDPBackend.MATH) if second else contextlib.nullcontext()
            try:
                with torch.set_grad_enabled(cross_entropy or "jacobian" in self.uses), kernel:
                    logits = model(x)
                    if cross_entropy:
                        loss = F.cross_entropy(logits, y.to(dev))
                        gs = torch.autograd.grad(loss, self.params + outs, allow_unused=True,
                                                 retain_graph="jacobian" in self.uses or second,
                                                 create_graph=second)
                        if second:  # GraSP's full-batch gradient, with its graph
                            graph_grads = [t + share * g if g is not None else t
                                           for t, g in zip(graph_grads, gs)]
                        gs = [torch.zeros_like(t) if g is None else g.detach()
                              for t, g in zip(self.params + outs, gs)]
                        weight_g, out_g = gs[:len(self.params)], gs[len(self.params):]
                        self.half_grads.append(weight_g)
                        for total, g in zip(self.grads, weight_g):
                            total.add_(g, alpha=share)
                        acts.append([a.detach() for a in outs])
                        act_grads.append([g * share for g in out_g])
                    if "jacobian" in self.uses:
                        jacobian.append(torch.autograd.grad(logits.sum(), x, retain_graph=second)[0])
            finally:
                for h in h_outs + h_pre:
                    h.remove()
            if pre:
                codes.append(_codes(pre))
        if len(chunks) == 1 and len(self.half_grads) == 1:
            self.grads = self.half_grads[0]
        self.grasp = self._grasp(graph_grads) if second else None
        self.acts = [(torch.cat([c[i] for c in acts]), torch.cat([c[i] for c in act_grads]))
                     for i in range(len(acts[0]))] if acts and acts[0] else []
        self.codes = torch.cat(codes) if codes else None
        self.jacobian = torch.cat(jacobian) if jacobian else None

    def _grasp(self, graph_grads) -> float:
        with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
            by_id = {id(p): g for p, g in zip(self.params, graph_grads)}
            ws = [p for g in weight_groups(self.model, self.scope) for p in g]
            grads = [by_id[id(w)] if torch.is_tensor(by_id[id(w)]) else torch.zeros_like(w) for w in ws]
            return _grasp_value(ws, grads)

    def need(self, part: str) -> None:
        if part not in self.uses:
            raise ValueError(f"this SharedPass was run without {part!r}")

    def group_grads(self, scope: str, source=None) -> list:
        """(kind, weights, grads) per group of SCOPE, as _group_grads gives them."""
        self.need("grads")
        by_id = {id(p): g for p, g in zip(self.params, source or self.grads)}
        return [(kind, [p.detach() for p in ps], [by_id[id(p)] for p in ps])
                for kind, ps in _labelled_groups(self.model, scope)]


# ---------------------------------------------------------------- the proxies: definitions
# Each value function below is the one definition of its proxy; the proxy computes its inputs
# alone, its shared form reads them from a SharedPass.

def _grasp_value(ws, grads) -> float:
    """GRADS: dL/dw of the weights WS with their graph; -sum(w * Hg) by a second backward."""
    z = sum((g * g.detach()).sum() for g in grads)
    hg = torch.autograd.grad(z, ws, allow_unused=True)
    return _float(-sum((w.detach() * h).sum() for w, h in zip(ws, hg) if h is not None))


def _grad_norm_value(groups) -> float:
    return _float(sum(_flat(g).norm() for _, _, g in groups))


def _snip_value(groups) -> float:
    return _float(sum((_flat(w) * _flat(g)).abs().sum() for _, w, g in groups))


def _dss_value(groups) -> float:
    total = 0.0
    for kind, w, g in groups:
        if kind == "msa":
            total = total + (torch.linalg.matrix_norm(group_matrix(g, kind), "nuc")
                             * torch.linalg.matrix_norm(group_matrix(w, kind), "nuc"))
        else:
            total = total + (_flat(w) * _flat(g)).abs().sum()
    return _float(total)


def _fisher_value(pairs) -> float:
    total = 0.0
    for a, g in pairs:
        s = (a * g).sum(dim=1)  # (B, D)
        total = total + 0.5 * s.pow(2).sum(dim=1).mean()
    return _float(total)


def _jacob_cov_value(jac) -> float:
    corr = torch.corrcoef(jac.reshape(jac.shape[0], -1).double())
    v = torch.linalg.eigvalsh(corr)
    return _float(-torch.sum(torch.log(v + 1e-5) + 1.0 / (v + 1e-5)))


def _codes(inputs) -> torch.Tensor:
    return torch.cat([(a > 0).reshape(a.shape[0], -1) for a in inputs], 1).double()


def _nwot_value(c) -> float:
    k = c @ c.t() + (1 - c) @ (1 - c).t()
    return _float(torch.linalg.slogdet(k).logabsdet)


def _zico_value(groups, per_half) -> float:
    """GROUPS: lists of parameters; PER_HALF: per half, the gradients of those in order."""
    total, i = 0.0, 0
    for g in groups:
        stacked = torch.stack([_flat(h[i:i + len(g)]) for h in per_half])  # (2, elements)
        i += len(g)
        std = (stacked[1] - stacked[0]).abs() / 2  # = stacked.std(0, unbiased=False), 15x faster
        ratio = stacked.abs().mean(dim=0)[std > 0] / std[std > 0]
        if ratio.numel() and ratio.sum() > 0:
            total = total + torch.log(ratio.sum())
    return _float(total)


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
    return _float(forward_flops(model, tuple(images.shape[1:]), _device(model)))


@register_baseline("grad_norm")
def grad_norm(model, images, labels, scope="all"):
    """Gradient norm (Abdelfattah et al., ICLR 2021): sum over groups of ||dL/dW||_F."""
    return _grad_norm_value(_group_grads(model, images, labels, scope))


@register_baseline("snip")
def snip(model, images, labels, scope="all"):
    """SNIP (Lee et al., ICLR 2019): sum of |w * dL/dw|."""
    return _snip_value(_group_grads(model, images, labels, scope))


@register_baseline("grasp")
def grasp(model, images, labels, scope="all"):
    """GraSP (Wang et al., ICLR 2020): -sum(w * Hg), with Hg the Hessian-gradient product."""
    ws = [p for g in weight_groups(model, scope) for p in g]
    with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
        return _grasp_value(ws, _grads(model, images, labels, ws, create_graph=True))


@register_baseline("fisher")
def fisher(model, images, labels, scope="all"):
    """Fisher (Turner et al., ICLR 2020): 0.5 * E_batch sum_D (sum_tokens a * dL/da)^2 over modules."""
    weight_groups(model, scope)  # validates the scope; the proxy always uses every block's modules
    acts, handles = _capture(_modules(model))
    dev = _device(model)
    try:
        with torch.enable_grad():
            loss = F.cross_entropy(model(images.to(dev)), labels.to(dev))
            gs = torch.autograd.grad(loss, acts)
    finally:
        for h in handles:
            h.remove()
    return _fisher_value([(a.detach(), g) for a, g in zip(acts, gs)])


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
    return _jacob_cov_value(jac)


def nwot_codes(model, images) -> torch.Tensor:
    """Binary codes (B x F): sign pattern of each block's MLP activation input, over all blocks."""
    inputs, handles = _capture([b.mlp.act for b in transformer_blocks(model)], pre=True)
    try:
        with torch.no_grad():
            model(images.to(_device(model)))
    finally:
        for h in handles:
            h.remove()
    return _codes(inputs)


@register_baseline("nwot")
def nwot(model, images, labels, scope="all"):
    """NASWOT (Mellor et al., ICML 2021): log|det K| of the Hamming kernel of activation codes."""
    return _nwot_value(nwot_codes(model, images))


@register_baseline("dss")
def dss(model, images, labels, scope="all"):
    """DSS-indicator of TF-TAS (Zhou et al., CVPR 2022): MSA ||G||_nuc*||W||_nuc + MLP sum|w*g|."""
    return _dss_value(_group_grads(model, images, labels, scope))


@register_baseline("zico")
def zico(model, images, labels, scope="all"):
    """ZiCo (Li et al., ICLR 2023): sum over groups of log sum(E|g| / std(g)) over 2 batch halves."""
    if images.shape[0] < 2:
        return float("nan")
    groups = weight_groups(model, scope)
    params = [p for g in groups for p in g]
    per_half = [[g.detach() for g in _grads(model, x, y, params)] for x, y in _halves(images, labels)]
    return _zico_value(groups, per_half)


# ---------------------------------------------------------------- their shared forms

register_shared("grad_norm", "grads")(lambda sp, scope: _grad_norm_value(sp.group_grads(scope)))
register_shared("snip", "grads")(lambda sp, scope: _snip_value(sp.group_grads(scope)))
register_shared("dss", "grads")(lambda sp, scope: _dss_value(sp.group_grads(scope)))
register_shared("fisher", "acts")(lambda sp, scope: _fisher_value(sp.acts))
register_shared("nwot", "codes")(lambda sp, scope: _nwot_value(sp.codes))


@register_shared("grasp", "hessian")
def _grasp_shared(sp, scope):
    if scope != sp.scope:
        raise ValueError(f"this SharedPass holds GraSP for scope {sp.scope!r}, not {scope!r}")
    return sp.grasp


@register_shared("jacob_cov", "jacobian")
def _jacob_cov_shared(sp, scope):
    return float("nan") if sp.jacobian.shape[0] < 2 else _jacob_cov_value(sp.jacobian)


@register_shared("zico", "halves", "grads")
def _zico_shared(sp, scope):
    if len(sp.half_grads) < 2:
        return float("nan")
    groups = weight_groups(sp.model, scope)
    per_half = [[g for _, _, gs in sp.group_grads(scope, half) for g in gs] for half in sp.half_grads]
    return _zico_value(groups, per_half)
