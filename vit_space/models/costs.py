"""#params and FLOPs of an arch without building it: closed forms exact for both spaces.

A search checks thousands of candidates against a budget and a model build costs ~0.1-1 s, so
the counts are analytic; tests compare them with the model built on the meta device and the
`flops` baseline. The `params` and `flops` baselines (scope "all") are these counts, so scoring
them needs no model either (ANALYTIC_BASELINES).
"""
from __future__ import annotations

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from vit_space.core.errors import BadInput
from vit_space.data.spaces import arch_key, get_space
from vit_space.models.builders import MODEL_BUILDERS

PATCH_IN = 3 * 16 * 16  # inputs of one 16x16 RGB patch (both spaces' stems)


def _block_cost(dim: int, ratio: float, tokens: int) -> tuple:
    """One timm Block: LayerNorms, qkv+proj (with bias), MLP; FLOPs as FlopCounterMode counts them
    (2 per multiply-add of the linears, 4*T^2*D for the two attention matmuls)."""
    hidden = int(dim * ratio)
    params = 4 * dim * dim + 2 * dim * hidden + 9 * dim + hidden
    flops = 2 * tokens * (4 * dim * dim + 2 * dim * hidden) + 4 * tokens * tokens * dim
    return params, flops


def _autoformer_cost(arch: dict, img_size: int, num_classes: int) -> tuple:
    dim, patches = arch["hidden_dim"], (img_size // 16) ** 2
    tokens = patches + 1
    params = PATCH_IN * dim + dim + dim + tokens * dim + 2 * dim + dim * num_classes + num_classes
    flops = 2 * PATCH_IN * dim * patches + 2 * dim * num_classes
    for ratio in arch["mlp_ratio"]:
        p, f = _block_cost(dim, ratio, tokens)
        params, flops = params + p, flops + f
    return params, flops


def _pit_cost(arch: dict, img_size: int, num_classes: int) -> tuple:
    widths = [arch["base_dim"] * h for h in arch["num_heads"]]  # buildable: validate() checked
    grid = (img_size - 16) // 8 + 1
    params = PATCH_IN * widths[0] + widths[0] + widths[0] * grid * grid + widths[0]
    flops = 2 * PATCH_IN * widths[0] * grid * grid
    for i, (width, depth) in enumerate(zip(widths, arch["depth"])):
        if i:  # pooling: depthwise 3x3 stride-2 conv on the tokens, linear on the class token
            grid = (grid - 1) // 2 + 1
            prev = widths[i - 1]
            params += 10 * width + prev * width + width
            flops += 2 * 9 * width * grid * grid + 2 * prev * width
        p, f = _block_cost(width, arch["mlp_ratio"], grid * grid + 1)
        params, flops = params + depth * p, flops + depth * f
    last = widths[-1]
    return params + 2 * last + last * num_classes + num_classes, flops + 2 * last * num_classes


ANALYTIC_COSTS = {"autoformer": _autoformer_cost, "pit": _pit_cost}
_COSTS: dict = {}
_MAX_COSTS = 200_000  # memo entries kept (a long search checks many candidates)


def meta_model(space: str, arch: dict, img_size: int = 224, num_classes: int = 100):
    """The arch's model on the meta device: shapes only, no memory, no initialisation."""
    get_space(space).validate(arch)
    try:
        with torch.device("meta"):
            return MODEL_BUILDERS[space](arch, num_classes, img_size)
    except (ValueError, RuntimeError, AssertionError) as exc:
        raise BadInput(f"arch: cannot be built ({str(exc)[:80]})") from None


def forward_flops(model, image_shape: tuple, device=None) -> int:
    """FLOPs of one forward pass of one image of IMAGE_SHAPE (C, H, W), as FlopCounterMode counts
    them (multiply-add = 2). The math attention kernel, since the fused one is not counted."""
    x = torch.zeros(1, *image_shape, device=device)
    # not under no_grad: FlopCounterMode's module tracker fails on PiT's tuples there
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def counted_cost(space: str, arch: dict, img_size: int = 224, num_classes: int = 100) -> tuple:
    """(params, FLOPs) counted on the model built on the meta device (no memory, no init) with
    the `flops` baseline: the reference the analytic counts are tested against."""
    model = meta_model(space, arch, img_size, num_classes)
    flops = forward_flops(model, (3, img_size, img_size), "meta")
    return sum(p.numel() for p in model.parameters()), int(flops)


def arch_cost(space: str, arch: dict, img_size: int = 224, num_classes: int = 100) -> tuple:
    """(params, FLOPs of one image), memoised per arch; BadInput if the arch cannot be built."""
    key = (space, arch_key(arch), img_size, num_classes)
    if key not in _COSTS:
        if len(_COSTS) >= _MAX_COSTS:
            _COSTS.clear()
        get_space(space).validate(arch)
        count = ANALYTIC_COSTS.get(space)
        _COSTS[key] = (count(arch, img_size, num_classes) if count
                       else counted_cost(space, arch, img_size, num_classes))
    return _COSTS[key]



# baselines whose value (scope "all") is a count: name -> value from (params, FLOPs)
ANALYTIC_BASELINES = {"params": lambda cost: float(cost[0]), "flops": lambda cost: float(cost[1])}
