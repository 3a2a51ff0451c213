"""Seeded random draws whose bits do not depend on the CPU they run on.

torch compiles its CPU kernels once per instruction set (default, AVX2, AVX-512) and picks one at
run time: `normal_` (vectorised Box-Muller) and `uniform_(a, b)` (contracted to a fused
multiply-add where the CPU has one) give other bits on another CPU kind, so one seed gave other
initial weights and another synthetic batch on another machine. Here a draw is 52 random bits from
numpy's PCG64 (integer arithmetic: the same everywhere), made float64 by exactly rounded IEEE
arithmetic (+, -, *, clip), for normals passed through scipy's inverse normal CDF (one compiled
scalar routine with no run-time CPU dispatch), and rounded once to float32. The bits then depend on
the numpy and scipy releases, not on the processor.
"""
from __future__ import annotations

import hashlib

import numpy as np
from scipy import special

_STEP = 2.0 ** -52


def generator(seed: int, key: str) -> np.random.Generator:
    """An independent stream per (seed, key), e.g. one per parameter name, so one tensor's values
    do not depend on what was drawn before it (or on the number of classes, the image size...)."""
    salt = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, salt])))


def open_unit(rng: np.random.Generator, shape) -> np.ndarray:
    """Uniform on the open interval (0, 1): (k + 1/2) / 2^52, exact in float64, never 0 or 1."""
    k = rng.integers(0, 2 ** 52, size=shape, dtype=np.int64)
    return (k.astype(np.float64) + 0.5) * _STEP


def uniform(rng: np.random.Generator, shape, low: float, high: float) -> np.ndarray:
    return (low + (high - low) * open_unit(rng, shape)).astype(np.float32)


def normal(rng: np.random.Generator, shape, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    return (special.ndtri(open_unit(rng, shape)) * std + mean).astype(np.float32)


def trunc_normal(rng: np.random.Generator, shape, mean: float = 0.0, std: float = 1.0,
                 a: float = -2.0, b: float = 2.0) -> np.ndarray:
    """The normal(mean, std) truncated to [a, b] by its inverse CDF, as timm's trunc_normal_
    draws it (the same distribution; a and b are absolute bounds, as there)."""
    lo, hi = special.ndtr((a - mean) / std), special.ndtr((b - mean) / std)
    x = special.ndtri(lo + (hi - lo) * open_unit(rng, shape)) * std + mean
    return np.clip(x, a, b).astype(np.float32)
