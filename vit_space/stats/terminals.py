"""The ViT statistics as GP terminals: their types and the primitive set built on them.

MSA weights and gradients share one shape class, MLP weights and gradients another, and all four
activation tensors a third, so `mul(msa_w, msa_g)` is a valid tree and `mul(msa_w, mlp_w)` is
not. The two per-block scalars `msa_numel` and `mlp_numel` carry each module's true size.
"""
from __future__ import annotations

from functools import lru_cache

from primitives import Scalar, build_primitive_set, tensor_type

MsaWeight = tensor_type("MsaWeight")
MlpWeight = tensor_type("MlpWeight")
Activation = tensor_type("Activation")

VIT_TERMINALS = {
    "msa_w": MsaWeight, "msa_g": MsaWeight,
    "mlp_w": MlpWeight, "mlp_g": MlpWeight,
    "msa_a": Activation, "msa_ga": Activation, "mlp_a": Activation, "mlp_ga": Activation,
    "msa_numel": Scalar, "mlp_numel": Scalar,
}


@lru_cache(maxsize=1)
def vit_primitive_set():
    """The shared primitive set of ViT proxies (built once: DEAP psets are read-only in use)."""
    return build_primitive_set(VIT_TERMINALS, name="VIT_PROXY")
