"""Portable draws: the distributions they claim, independent streams, and every parameter covered."""
import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from vit_space.core import portable_random
from vit_space.models.builders import portable_init


def test_draws_have_their_distributions():
    rng = portable_random.generator(0, "x")
    u = portable_random.open_unit(rng, 200_000)
    assert 0 < u.min() and u.max() < 1 and stats.kstest(u, "uniform").pvalue > 1e-3
    z = portable_random.normal(portable_random.generator(0, "z"), 200_000, mean=1.0, std=2.0)
    assert z.dtype == np.float32 and stats.kstest(z, "norm", args=(1.0, 2.0)).pvalue > 1e-3
    t = portable_random.trunc_normal(portable_random.generator(0, "t"), 200_000, std=1.0, a=-1.0, b=0.5)
    assert t.min() >= -1.0 and t.max() <= 0.5
    assert stats.kstest(t, stats.truncnorm(-1.0, 0.5).cdf).pvalue > 1e-3
    w = portable_random.uniform(portable_random.generator(0, "w"), 1000, -0.25, 0.25)
    assert w.min() >= -0.25 and w.max() <= 0.25


def test_streams_are_reproducible_and_independent():
    draw = lambda seed, key: portable_random.normal(portable_random.generator(seed, key), 64)
    assert np.array_equal(draw(3, "blocks.0.attn.qkv.weight"), draw(3, "blocks.0.attn.qkv.weight"))
    assert not np.array_equal(draw(3, "blocks.0.attn.qkv.weight"), draw(3, "blocks.1.attn.qkv.weight"))
    assert not np.array_equal(draw(3, "head.weight"), draw(4, "head.weight"))


def test_every_parameter_gets_a_portable_draw():
    model = nn.Sequential(nn.Conv2d(3, 4, 2), nn.LayerNorm(4), nn.Linear(4, 5))
    for p in model.parameters():
        nn.init.constant_(p, 7.0)
    with torch.no_grad():
        portable_init(model, 11)
    conv, norm, linear = model
    bound = 1 / (3 * 2 * 2) ** 0.5
    assert conv.weight.abs().max() <= bound and conv.bias.abs().max() <= bound
    assert torch.equal(norm.weight, torch.ones(4)) and torch.equal(norm.bias, torch.zeros(4))
    assert torch.equal(linear.bias, torch.zeros(5)) and 0 < linear.weight.std() < 0.1
    with pytest.raises(TypeError, match="no portable initialisation for parameter"):
        with torch.no_grad():
            portable_init(nn.Sequential(nn.Embedding(3, 2)), 0)
