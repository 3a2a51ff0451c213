"""StatsTable's helper processes (issue 21): forked helpers that evaluate a run of every group's
chunks give the bits of worker threads and of one thread, read the caller's memo, and leave the
table usable when one dies, raises or is interrupted."""

import copy
import gc
import os
import random

import numpy as np
import pytest
import torch

from primitives import generate_tree, parse_formula
from vit_space.scoring import table as table_module
from vit_space.scoring.table import StatsTable
from vit_space.scoring.unit_processes import fork_available, share_out
from vit_space.stats.terminals import vit_primitive_set

pytestmark = pytest.mark.skipif(not fork_available(), reason="helper processes need fork")


def tree(text):
    return parse_formula(text, vit_primitive_set())


@pytest.fixture(scope="module")
def items(two_arch_items):
    return two_arch_items


def forked(stats, units=7):
    table = StatsTable(stats, chunk_units=units, workers=2, processes=True)
    assert table.uses_processes()
    return table


def test_share_out_keeps_order_and_balance():
    for n in range(0, 12):
        for count in (1, 2, 3):
            runs = share_out(list(range(n)), count)
            assert len(runs) == count and sum(runs, []) == list(range(n))
            assert max(map(len, runs)) - min(map(len, runs)) <= 1


@pytest.mark.parametrize("space, seed", [("autoformer", 0), ("pit", 1)])
def test_processes_threads_and_one_thread_give_the_same_bits(items, space, seed):
    rng = random.Random(seed)
    trees = [generate_tree(vit_primitive_set(), 2, 5, rng) for _ in range(25)]
    trees += [tree("nuclear(matmul(eye_msa_w, msa_g))"), tree("logdet_gram(gram(mlp_ga))")]
    one = StatsTable(items[space], chunk_units=7, workers=1)
    threads = StatsTable(items[space], chunk_units=7, workers=2, processes=False)
    processes = forked(items[space])
    for t in trees + trees[:5]:  # the repeats are memo hits
        expect = one.scores(t)
        np.testing.assert_array_equal(processes.scores(t), expect, err_msg=str(t))
        np.testing.assert_array_equal(threads.scores(t), expect, err_msg=str(t))
    helper = processes._helpers.helpers[0][0]
    assert helper.is_alive() and helper.pid != os.getpid()
    assert torch.get_num_threads() == 1  # the caller's count is put back (conftest's one)
    for (_, owner), memo in zip(processes.groups, processes.memos):
        assert str(trees[-1]) in memo and memo[str(trees[-1])].shape == owner.shape
    processes.close()
    assert not helper.is_alive() and processes._helpers is None


def test_helpers_read_the_callers_memo(items):
    """A memo hit in a helper's units is the caller's vector: planted values come back."""
    table = forked(items["autoformer"])
    t = tree("mean_abs(mul(msa_w, msa_g))")
    table.scores(t)
    for memo in table.memos:
        memo[str(t)] = torch.arange(len(memo[str(t)]), dtype=memo[str(t)].dtype)
    expect = np.zeros(table.n_items)
    for _, owner in table.groups:
        np.add.at(expect, owner.numpy(), np.arange(len(owner)))
    np.testing.assert_array_equal(table.scores(t), expect)
    table.close()


def test_a_lost_helper_leaves_the_work_to_this_process(items):
    table = forked(items["pit"])
    t = tree("add(std(msa_a), nuclear(mlp_w))")
    expect = StatsTable(items["pit"], chunk_units=7, workers=1).scores(t)
    np.testing.assert_array_equal(table.scores(t), expect)
    helper = table._helpers.helpers[0][0]
    helper.kill()
    helper.join()
    other = tree("frobenius(sigmoid(msa_g))")
    with pytest.warns(RuntimeWarning, match="helper process lost"):
        got = table.scores(other)
    np.testing.assert_array_equal(got, StatsTable(items["pit"], chunk_units=7, workers=1).scores(other))
    assert not table.uses_processes()
    np.testing.assert_array_equal(table.scores(t), expect)  # on threads from now on


def test_an_error_in_a_helper_is_raised_and_the_next_tree_is_clean(items, monkeypatch):
    caller = os.getpid()
    real = vit_primitive_set().context["sigmoid:MsaWeight"]

    def fails_in_helpers(x):
        if os.getpid() != caller:
            raise ValueError("boom")
        return real(x)

    monkeypatch.setitem(vit_primitive_set().context, "sigmoid:MsaWeight", fails_in_helpers)
    table = forked(items["autoformer"])  # forked on first use: the helpers run the patched op
    with pytest.raises(RuntimeError, match="scoring helper process: ValueError: boom"):
        table.scores(tree("frobenius(sigmoid(msa_g))"))
    t = tree("l1(msa_a)")
    np.testing.assert_array_equal(
        table.scores(t), StatsTable(items["autoformer"], chunk_units=7, workers=1).scores(t))
    table.close()


def test_helpers_keep_what_they_inherit_out_of_the_collectors_sight(items, monkeypatch):
    """gc.freeze in each helper: its full collections skip the caller's objects."""
    caller = os.getpid()
    assert gc.get_freeze_count() == 0  # else a helper would inherit frozen objects anyway
    real = vit_primitive_set().context["sigmoid:MsaWeight"]

    def reports_frozen(x):
        if os.getpid() != caller:
            raise ValueError(f"frozen={gc.get_freeze_count()}")
        return real(x)

    monkeypatch.setitem(vit_primitive_set().context, "sigmoid:MsaWeight", reports_frozen)
    table = forked(items["autoformer"])
    with pytest.raises(RuntimeError, match=r"frozen=[1-9]\d{3,}"):  # thousands, not a handful
        table.scores(tree("frobenius(sigmoid(msa_g))"))
    table.close()


def test_an_interrupted_tree_leaves_no_answer_behind(items, monkeypatch):
    """Ctrl-C while the helpers work: they are ended, and the next tree forks fresh ones rather
    than reading the interrupted tree's answer."""
    table = forked(items["autoformer"])
    first = tree("std(msa_g)")
    table.scores(first)
    real = table_module.evaluate_share

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(table_module, "evaluate_share", interrupted)
    with pytest.raises(KeyboardInterrupt):
        table.scores(tree("rms(mlp_ga)"))
    assert table._helpers is None
    monkeypatch.setattr(table_module, "evaluate_share", real)
    t = tree("mean(exp(msa_w))")
    np.testing.assert_array_equal(
        table.scores(t), StatsTable(items["autoformer"], chunk_units=7, workers=1).scores(t))
    table.close()


def test_a_node_the_helpers_cannot_name_goes_to_threads(items, monkeypatch):
    t = tree("frobenius(msa_w)")
    odd = copy.copy(t[1])
    odd.name = "not_in_the_set"  # the same statistic, under a name the set does not hold
    t[1] = odd
    table = forked(items["autoformer"])
    calls, real_parallel = [], table_module.evaluate_parallel
    monkeypatch.setattr(table_module, "evaluate_parallel",
                        lambda *a: calls.append(1) or real_parallel(*a))
    got = table.scores(t)
    assert calls == [1]
    np.testing.assert_array_equal(
        got, StatsTable(items["autoformer"], chunk_units=7, workers=1).scores(tree("frobenius(msa_w)")))
    table.close()


def test_processes_need_fork(items, monkeypatch):
    monkeypatch.setattr(table_module, "fork_available", lambda: False)
    with pytest.raises(ValueError, match="no fork"):
        StatsTable(items["pit"], processes=True)
    table = StatsTable(items["pit"], chunk_units=7, workers=2)  # automatic: threads
    assert not table.uses_processes()
