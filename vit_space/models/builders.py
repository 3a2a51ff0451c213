"""Build a randomly initialised timm ViT from a bench arch record.

One plain builder function per space, registered by name (as timm does), so `build_model` holds no
if-chain. Initialisation is seeded from the arch record: the same arch gets the same weights on
every data set and in every run, which makes cached statistics and proxy scores reproducible.
On the CPU every parameter is drawn from its own portable stream (vit_space.core.portable_random,
keyed by the arch's seed and the parameter's name): the same bits on any CPU, whatever instruction
set torch's kernels use. On another device the parameters are created there, from that device's
random stream (timm's initialisers): deterministic per arch, but other weights than the CPU's.

timm is imported when a model is first built, not with this module: it takes seconds (it pulls in
torchvision), and a run whose statistics are all cached builds no model.
"""
from __future__ import annotations

import contextlib
import math
from functools import partial

import numpy as np
import torch
from torch import nn

from vit_space.core import portable_random
from vit_space.data.spaces import arch_seed, get_space

MODEL_BUILDERS = {}


def register_builder(space: str):
    def wrap(fn):
        MODEL_BUILDERS[space] = fn
        return fn
    return wrap


class AutoFormerSubnet(nn.Module):
    """A standalone AutoFormer-Ti subnet: patch 16, class token, learned position embedding,
    pre-norm blocks with per-block heads and MLP ratio, final LayerNorm, mean of patch tokens."""

    def __init__(self, arch: dict, num_classes: int, img_size: int = 224, patch_size: int = 16):
        from timm.layers import PatchEmbed
        from timm.models.vision_transformer import Block
        super().__init__()
        dim = arch["hidden_dim"]
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=3, embed_dim=dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, dim))
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.Sequential(*[
            Block(dim, num_heads=h, mlp_ratio=r, qkv_bias=True, norm_layer=norm)
            for h, r in zip(arch["num_heads"], arch["mlp_ratio"])])
        self.norm = norm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 1:].mean(dim=1))


def _init_linear(module: nn.Module) -> None:
    from timm.layers import trunc_normal_
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


@register_builder("autoformer")
def build_autoformer(arch: dict, num_classes: int, img_size: int = 224) -> nn.Module:
    return AutoFormerSubnet(arch, num_classes, img_size)


@register_builder("pit")
def build_pit(arch: dict, num_classes: int, img_size: int = 224) -> nn.Module:
    from timm.models.pit import PoolingVisionTransformer
    return PoolingVisionTransformer(
        img_size=img_size, patch_size=16, stride=8, base_dims=[arch["base_dim"]] * 3,
        depth=list(arch["depth"]), heads=list(arch["num_heads"]), mlp_ratio=arch["mlp_ratio"],
        num_classes=num_classes)


def _seeded_init(model: nn.Module, seed: int) -> None:
    """Re-draw every Linear/LayerNorm in registration order (the head is registered last), then
    the position embedding and class token: the blocks' weights then depend on the arch only,
    not on the number of classes or the image size."""
    from timm.layers import trunc_normal_
    torch.manual_seed(seed)
    model.apply(_init_linear)
    for name, param in model.named_parameters():
        if name.split(".")[-1] in ("pos_embed", "cls_token"):
            trunc_normal_(param, std=0.02)


def _trunc_normal(module, rng, shape):
    return portable_random.trunc_normal(rng, shape, std=0.02)


def _zeros(module, rng, shape):
    return np.zeros(shape, np.float32)


def _ones(module, rng, shape):
    return np.ones(shape, np.float32)


def _conv_uniform(module, rng, shape):
    """PyTorch's default Conv2d draw (kaiming_uniform with a = sqrt(5), and the bias alike):
    uniform within 1 / sqrt(fan_in) of the weight."""
    bound = 1.0 / math.sqrt(math.prod(module.weight.shape[1:]))
    return portable_random.uniform(rng, shape, -bound, bound)


# module type -> {parameter name: (module, generator, shape) -> float32 array}
PORTABLE_INIT = {
    nn.Linear: {"weight": _trunc_normal, "bias": _zeros},
    nn.LayerNorm: {"weight": _ones, "bias": _zeros},
    nn.Conv2d: {"weight": _conv_uniform, "bias": _conv_uniform},
}
EMBEDDINGS = {"pos_embed", "cls_token"}  # trunc-normal 0.02, as timm initialises them


def portable_init(model: nn.Module, seed: int) -> None:
    """Every parameter from its own stream of (seed, name), CPU-independent bit for bit; the
    distributions are timm's (trunc-normal 0.02 linears and embeddings, zero biases, unit norms,
    PyTorch's default convolutions). A parameter of an unknown kind is an error, not left as the
    constructor drew it (that draw would again depend on the CPU)."""
    done = set()
    for prefix, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            full = f"{prefix}.{name}" if prefix else name
            rule = PORTABLE_INIT.get(type(module), {}).get(name)
            if rule is None and name in EMBEDDINGS:
                rule = _trunc_normal
            if rule is not None:
                param.copy_(torch.from_numpy(rule(module, portable_random.generator(seed, full),
                                                  tuple(param.shape))))
                done.add(full)
    missing = [name for name, _ in model.named_parameters() if name not in done]
    if missing:
        raise TypeError(f"no portable initialisation for parameter(s) {', '.join(missing[:5])}")


def _on_device(device: torch.device):
    """Factory functions create tensors on `device` (the CPU needs no context: left as it was)."""
    return contextlib.nullcontext() if device.type == "cpu" else device


def _forked_rng(device: torch.device):
    """The global random state of the CPU and, on CUDA, of the target GPU, restored on exit."""
    if device.type != "cuda":
        return torch.random.fork_rng(devices=[])
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.random.fork_rng(devices=[index], device_type="cuda")


def build_model(space: str, arch: dict, num_classes: int, img_size: int = 224,
                device="cpu") -> nn.Module:
    """Validate the arch, then build it on `device` with weights seeded from the record (the
    global RNG is left as it was, so callers' own seeding is not disturbed). Building on the target
    device skips a CPU initialisation and a copy: on a GPU that is most of an extraction's time."""
    get_space(space).validate(arch)
    seed = arch_seed(space, arch)
    device = torch.device(device)
    with _forked_rng(device), _on_device(device):
        torch.manual_seed(seed)
        model = MODEL_BUILDERS[space](arch, num_classes, img_size)
        with torch.no_grad():
            if device.type == "cpu":
                portable_init(model, seed)
            else:  # a device's own generator, as timm draws (CUDA: its own stream)
                _seeded_init(model, seed)
    return model


def random_stream(device) -> str:
    """"" for the CPU, "-cuda" (the device type) elsewhere: models built on another device draw
    their weights from that device's generator, so whatever was computed from them (statistics,
    baseline scores) is stored apart under this suffix, never mixed with the CPU's."""
    kind = torch.device(device).type
    return "" if kind == "cpu" else f"-{kind}"


def transformer_blocks(model: nn.Module) -> list:
    """The timm `Block`s of a model in forward order: the units the ViT statistics describe."""
    from timm.models.vision_transformer import Block
    return [m for m in model.modules() if isinstance(m, Block)]
