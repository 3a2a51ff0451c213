"""ViT statistics: what one forward + backward of a fresh ViT on one batch leaves behind.

For every transformer block, two modules: MSA (attention) and MLP. Per module we keep
  weights  W : its linear weights stacked as rows over the model width D,
               MSA = [qkv.weight; proj.weight]      (4D x D),
               MLP = [fc1.weight; fc2.weight^T]     (2H x D, H = int(D * mlp_ratio)),
  grads    G : dLoss/dW, same layout,
  act      A : the module's output (what it adds to the residual stream), (batch, tokens, D),
  act grad GA: dLoss/dA, same layout,
  numel      : the element count of the full W (a per-block scalar).
Biases and LayerNorms are left out: the proxies of the paper are built on these matrices.

Budget: full W and G of 100 archs x 3 data sets would be ~17 GB in float32 and full activations
more, so by default each module keeps a seeded *sketch*: `rows` rows of W/G (the same rows for W
and G, and for every data set of an arch) and `tokens` tokens per sample of A/GA. Mean-type
reductions over a sketch estimate those of the full tensor; `numel` restores the true size.
`rows=None, tokens=None` keeps everything (used to check tree proxies against direct ones).
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from vit_space.data.spaces import arch_key, arch_seed
from vit_space.models.builders import build_model, transformer_blocks

# 2: CPU weights and the synthetic batch from portable streams (the same bits on any CPU)
STATS_VERSION = 2
TENSOR_FIELDS = ("msa_w", "msa_g", "mlp_w", "mlp_g", "msa_a", "msa_ga", "mlp_a", "mlp_ga")
SCALAR_FIELDS = ("msa_numel", "mlp_numel")


@dataclass(frozen=True)
class StatsConfig:
    """Everything besides (space, arch, dataset) that changes the statistics."""
    batch_size: int = 16
    img_size: int = 224
    seed: int = 0
    data_root: Optional[str] = None
    rows: Optional[int] = 32
    tokens: Optional[int] = 4

    def key(self, space: str, arch: dict, dataset: str) -> str:
        text = f"v{STATS_VERSION}|{space}|{arch_key(arch)}|{dataset}|{sorted(asdict(self).items())}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]


def _subset(n: int, keep: Optional[int], gen: torch.Generator) -> Optional[torch.Tensor]:
    if keep is None or keep >= n:
        return None
    return torch.randperm(n, generator=gen)[:keep].sort().values


def _take(t: torch.Tensor, idx: Optional[torch.Tensor], dim: int) -> np.ndarray:
    t = t if idx is None else t.index_select(dim, idx.to(t.device))
    return t.detach().to("cpu", torch.float32).numpy().copy()


def _module_matrices(block, part: str = "weight") -> tuple:
    """(MSA, MLP) matrices of a block in the layout above: its weights, or with part="grad"
    their gradients."""
    qkv, proj, fc1, fc2 = (m.weight.grad if part == "grad" else m.weight
                           for m in (block.attn.qkv, block.attn.proj, block.mlp.fc1, block.mlp.fc2))
    return torch.cat([qkv, proj], 0), torch.cat([fc1, fc2.t()], 0)


def _draws(msa_rows: int, mlp_rows: int, tokens: int, cfg: StatsConfig, gen: torch.Generator) -> tuple:
    """A block's sketch indices, drawn in one fixed order from the arch's generator: whoever
    reproduces a sketch (the weights-only path) must draw all three to stay in step."""
    return (_subset(msa_rows, cfg.rows, gen), _subset(mlp_rows, cfg.rows, gen),
            _subset(tokens, cfg.tokens, gen))


def _block_record(block, out: dict, cfg: StatsConfig, gen: torch.Generator) -> dict:
    msa_w, mlp_w = _module_matrices(block)
    msa_g, mlp_g = _module_matrices(block, "grad")
    msa_rows, mlp_rows, tokens = _draws(msa_w.shape[0], mlp_w.shape[0], out["msa"].shape[1], cfg, gen)
    return {
        "msa_w": _take(msa_w, msa_rows, 0), "msa_g": _take(msa_g, msa_rows, 0),
        "mlp_w": _take(mlp_w, mlp_rows, 0), "mlp_g": _take(mlp_g, mlp_rows, 0),
        "msa_a": _take(out["msa"], tokens, 1), "msa_ga": _take(out["msa"].grad, tokens, 1),
        "mlp_a": _take(out["mlp"], tokens, 1), "mlp_ga": _take(out["mlp"].grad, tokens, 1),
        "msa_numel": float(msa_w.numel()), "mlp_numel": float(mlp_w.numel()),
    }


def forward_backward(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list:
    """One cross-entropy forward/backward; returns per block the MSA and MLP outputs (with .grad)."""
    outputs, handles = [], []
    for block in transformer_blocks(model):
        slot = {}
        outputs.append(slot)
        for name, module in (("msa", block.attn), ("mlp", block.mlp)):
            def keep(_m, _i, out, slot=slot, name=name):
                out.retain_grad()
                slot[name] = out
            handles.append(module.register_forward_hook(keep))
    try:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
    finally:
        for h in handles:
            h.remove()
    return outputs


def block_tokens(space: str, arch: dict, img_size: int, num_classes: int) -> list:
    """Tokens per sample of each block's output, from a forward on the meta device (shapes only:
    no weights, no data): what a block's token sketch draws from."""
    from vit_space.models.costs import meta_model
    model, seen = meta_model(space, arch, img_size, num_classes), []
    handles = [b.attn.register_forward_hook(lambda _m, _i, out: seen.append(out.shape[1]))
               for b in transformer_blocks(model)]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, img_size, img_size, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return seen


def extract_weight_stats(space: str, arch: dict, dataset: str, cfg: StatsConfig,
                         device: str = "cpu") -> dict:
    """What a tree over weights and module sizes reads, with no batch and no backward: the same
    weight sketches as extract_stats (the generator makes the same draws, token draws included),
    gradients and activations empty. Not a cache entry: the cache holds complete statistics."""
    from vit_space.data.datasets import NUM_CLASSES
    model = build_model(space, arch, NUM_CLASSES[dataset], cfg.img_size, device)
    tokens = block_tokens(space, arch, cfg.img_size, NUM_CLASSES[dataset])
    gen = torch.Generator().manual_seed(arch_seed(space, arch))
    empty = np.zeros((0,), np.float32)
    blocks = []
    for block, n_tokens in zip(transformer_blocks(model), tokens):
        msa_w, mlp_w = _module_matrices(block)
        msa_rows, mlp_rows, _ = _draws(msa_w.shape[0], mlp_w.shape[0], n_tokens, cfg, gen)
        blocks.append({**{f: empty for f in TENSOR_FIELDS},
                       "msa_w": _take(msa_w, msa_rows, 0), "mlp_w": _take(mlp_w, mlp_rows, 0),
                       "msa_numel": float(msa_w.numel()), "mlp_numel": float(mlp_w.numel())})
    return {"blocks": blocks, "meta": {"space": space, "arch": arch, "dataset": dataset,
                                       "config": asdict(cfg), "version": STATS_VERSION,
                                       "weights_only": True}}


def extract_stats(space: str, arch: dict, dataset: str, cfg: StatsConfig,
                  device: str = "cpu") -> dict:
    """Build the arch, run the batch once, return {'blocks': [per-block dict], 'meta': ...}."""
    # imported here: the data sets pull in torchvision and timm (seconds), which a run whose
    # statistics are all cached never needs
    from vit_space.data.batches import make_batch
    from vit_space.data.datasets import NUM_CLASSES
    model = build_model(space, arch, NUM_CLASSES[dataset], cfg.img_size, device)
    images, labels = make_batch(dataset, cfg.batch_size, cfg.img_size, cfg.seed, cfg.data_root)
    outputs = forward_backward(model, images.to(device), labels.to(device))
    gen = torch.Generator().manual_seed(arch_seed(space, arch))
    blocks = [_block_record(b, out, cfg, gen) for b, out in zip(transformer_blocks(model), outputs)]
    return {"blocks": blocks, "meta": {"space": space, "arch": arch, "dataset": dataset,
                                       "config": asdict(cfg), "version": STATS_VERSION}}
