"""A tree that reads only statistics repeated across items (an arch's weights, the same with every
data set) runs once per distinct unit (vit_space.scoring.distinct): the scores must be those of
evaluating every unit, bit for bit, and units count as repeats only when equal bit for bit."""

import random

import numpy as np
import pytest
import torch

from primitives import generate_tree, parse_formula
from vit_space.scoring import table as table_module
from vit_space.scoring.distinct import PREFIX, find_distinct_units
from vit_space.scoring.table import StatsTable
from vit_space.stats.terminals import vit_primitive_set

WEIGHT_ONLY = ["frobenius(msa_w)", "nuclear(msa_w)", "logdet_gram(gram(mlp_w))", "std(zscore(msa_w))",
               "mean(matmul(eye_msa_w, msa_w))", "numel(mlp_w)", "add(l1(msa_w), frobenius(mlp_w))",
               "div(mean_abs(msa_w), rms(mlp_w))", "sum(log(sub(msa_w, msa_w)))"]
MIXED = ["frobenius(mul(msa_w, msa_g))", "add(l1(msa_w), l1(mlp_a))", "mean(matmul(eye_msa_w, msa_g))"]


def tree(text):
    return parse_formula(text, vit_primitive_set())


@pytest.fixture(scope="module")
def items(two_arch_items):
    """Two archs of each space on two data sets: every weight unit twice."""
    return two_arch_items


@pytest.mark.parametrize("space", ["autoformer", "pit"])
def test_the_weights_repeat_and_nothing_else(items, space):
    table = StatsTable(items[space])
    found = find_distinct_units(table.groups)
    assert {"msa_w", "mlp_w"} <= found.fields
    assert not found.fields & {"msa_g", "mlp_g", "msa_a", "mlp_a", "msa_ga", "mlp_ga"}
    for (inputs, _), first, inverse in zip(table.groups, found.first, found.inverse):
        assert len(first) * 2 == len(inverse)  # each unit once per data set
        assert torch.equal(first[inverse[first]], first)  # a class's first unit is its own
        for name in found.fields:
            x = inputs[name]
            assert torch.equal(x, x[first[inverse]])  # every unit is its class's first
        joint = torch.cat([inputs[name][first].reshape(len(first), -1) for name in found.fields], 1)
        assert len(torch.unique(joint, dim=0)) == len(first)  # and the classes differ


@pytest.mark.parametrize("space, seed", [("autoformer", 0), ("pit", 1)])
@pytest.mark.parametrize("units, workers", [(None, None), (1, 1), (7, 2), (10**9, 1)])
def test_distinct_units_give_the_bits_of_every_unit(items, space, seed, units, workers):
    rng = random.Random(seed)
    trees = [tree(t) for t in WEIGHT_ONLY + MIXED]
    trees += [generate_tree(vit_primitive_set(), 2, 5, rng) for _ in range(15)]
    once = StatsTable(items[space], chunk_units=units, workers=workers)
    every = StatsTable(items[space], chunk_units=units, workers=workers, distinct_units=False)
    for t in trees + trees[:4]:  # the repeats are memo hits
        np.testing.assert_array_equal(once.scores(t), every.scores(t), err_msg=str(t))
    once.close()
    every.close()


def test_which_table_evaluates_a_tree(items):
    table = StatsTable(items["autoformer"])
    pset = vit_primitive_set()
    distinct = table.table_for(tree(WEIGHT_ONLY[0]), pset)
    assert distinct is not table
    assert [len(o) * 2 for _, o in distinct.groups] == [len(o) for _, o in table.groups]
    assert set(distinct.groups[0][0]) == table._distinct.fields  # only the repeated statistics
    assert all(table.table_for(tree(t), pset) is distinct for t in WEIGHT_ONLY)
    assert all(table.table_for(tree(t), pset) is table for t in MIXED)
    off = StatsTable(items["autoformer"], distinct_units=False)
    assert off.table_for(tree(WEIGHT_ONLY[0]), pset) is off


def test_a_weight_tree_reads_each_distinct_unit_once(items, monkeypatch):
    table = StatsTable(items["autoformer"], chunk_units=10**9, workers=1)
    seen = []
    real = table_module.evaluate_tree
    monkeypatch.setattr(table_module, "evaluate_tree",
                        lambda t, p, inputs, *a: seen.append(len(inputs["msa_w"])) or real(t, p, inputs, *a))
    table.scores(tree("frobenius(msa_w)"))
    assert sum(seen) * 2 == sum(len(owner) for _, owner in table.groups)
    seen.clear()
    table.scores(tree("frobenius(msa_w)"))  # a memo hit in the distinct units' own memo
    assert "frobenius(msa_w)" in table._on_distinct.memos[0]


def groups_of(*units):
    """One group of the given units (each a 1-D float32 tensor) as statistic `w`, with a statistic
    `g` that never repeats."""
    w = torch.stack(units)
    return [({"w": w, "g": torch.arange(len(units), dtype=torch.float32)}, torch.arange(len(units)))]


def test_units_equal_in_their_first_values_only_are_distinct():
    a = torch.randn(PREFIX + 10)
    b = a.clone()
    b[-1] += 1  # the same first PREFIX values, another unit
    found = find_distinct_units(groups_of(a, a, b, a, b.clone(), a))
    assert found.fields == {"w"}
    classes = found.inverse[0].tolist()
    assert len({classes[i] for i in (0, 1, 3, 5)}) == 1 and classes[2] == classes[4] != classes[0]
    assert sorted(found.first[0].tolist()) == [0, 2]


def test_units_equal_as_numbers_but_not_as_bits_are_distinct():
    zeros, negative_zeros = torch.zeros(PREFIX), -torch.zeros(PREFIX)
    nan, other_nan = torch.full((PREFIX,), float("nan")), -torch.full((PREFIX,), float("nan"))
    found = find_distinct_units(groups_of(zeros, negative_zeros, zeros, negative_zeros, nan,
                                          other_nan, nan, other_nan))
    classes = found.inverse[0].tolist()
    assert classes[0] == classes[2] != classes[1] == classes[3]
    assert classes[4] == classes[6] != classes[5] == classes[7]
    assert len(set(classes)) == 4


def test_no_repeats_or_too_few_leave_every_unit():
    assert find_distinct_units(groups_of(*torch.randn(6, 8))) is None
    four = torch.randn(4, 8)
    assert find_distinct_units(groups_of(four[0], four[0], four[1], four[2], four[3])) is None
    assert find_distinct_units([]) is None
