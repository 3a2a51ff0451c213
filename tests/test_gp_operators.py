"""GP operators on their own: mutations, per-node probability, parent selection, elitism-preserve,
the memoised fitness and DEAP's creator/toolbox plumbing. No ViT is built: only the primitive set,
scripted toolboxes and fake evaluators."""

import math
import random
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from deap import creator, gp

from gp.creator_setup import as_individual, ensure_creator_classes
from gp.elitism import elitism_preserve
from gp.fitness import REJECT_REASONS, MemoFitness
from gp.mutation import MUTATIONS, _same_signature, make_mutation, mutate_nodes
from gp.search import SearchConfig, make_toolbox
from gp.selection import SELECTIONS, select_double, select_pool_topk, select_tournament
from primitives import Scalar, generate_tree, parse_formula
from vit_space.scoring.jcm import WORST
from vit_space.stats.terminals import vit_primitive_set

PSET = vit_primitive_set()


def random_trees(n, seed=0, min_depth=1, max_depth=4):
    rng = random.Random(seed)
    return [as_individual(generate_tree(PSET, min_depth, max_depth, rng)) for _ in range(n)]


def has_alternative(node):
    return any(o is not node for o in _same_signature(PSET, node))


def same_nodes(a, b):
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


# ------------------------------------------------------------------------------- mutations

@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_mutation_keeps_tree_valid_and_input_intact(name):
    trees = random_trees(150, seed=sorted(MUTATIONS).index(name))
    changed = 0
    for i, tree in enumerate(trees):
        before_text, before_nodes = str(tree), list(tree)
        random.seed(i)  # DEAP's own mutations draw from the global generator
        child = make_mutation(name, PSET, random.Random(i), p_node=0.5)(tree)
        # the input is untouched, the child a distinct object of the same class
        assert str(tree) == before_text and same_nodes(tree, before_nodes)
        assert child is not tree and type(child) is type(tree)
        # same root type, and a well-typed tree: its printed form parses back to the same nodes
        assert child[0].ret is Scalar is PSET.ret
        text = str(child)
        parsed = parse_formula(text, PSET)
        assert str(parsed) == text
        assert same_nodes(parsed, child)
        if name == "node":
            assert len(child) == len(tree)
        changed += text != before_text
    # a mutation that never changes anything would pass all of the above
    assert changed >= 0.3 * len(trees), (name, changed)


def test_mutation_registry_and_factory():
    assert set(MUTATIONS) == {"node", "uniform", "shrink", "insert"}
    tree = random_trees(1, seed=3, min_depth=3)[0]
    # make_mutation passes p_node through for the node mutation only
    assert same_nodes(make_mutation("node", PSET, random.Random(0), p_node=0.0)(tree), tree)
    with pytest.raises(KeyError):
        make_mutation("nope", PSET, random.Random(0))


def test_node_mutation_p0_is_identity():
    rng = random.Random(1)
    for tree in random_trees(100, seed=1):
        child = mutate_nodes(tree, PSET, rng, p_node=0.0)
        assert child is not tree and same_nodes(child, tree)


def test_node_mutation_p1_changes_every_node_with_an_alternative():
    rng = random.Random(2)
    eligible = fixed = 0
    for tree in random_trees(150, seed=2):
        child = mutate_nodes(tree, PSET, rng, p_node=1.0)
        for old, new in zip(tree, child):
            # the replacement has the same signature, so the subtrees below still fit
            assert new.ret is old.ret and new.arity == old.arity
            if isinstance(old, gp.Primitive):
                assert isinstance(new, gp.Primitive) and list(new.args) == list(old.args)
            else:
                assert isinstance(new, gp.Terminal)
            if has_alternative(old):
                eligible += 1
                assert new is not old and new.name != old.name
            else:
                fixed += 1
                assert new is old  # e.g. `eye_msa_w`, gram(.), matmul(G_T, T): nothing to swap with
    assert eligible > 500 and fixed > 0


@pytest.mark.parametrize("p", [0.5, 0.2])
def test_node_mutation_rate_is_binomial(p):
    rng = random.Random(int(p * 100))
    trials = changed = 0
    for tree in random_trees(40, seed=5):
        for _ in range(25):
            child = mutate_nodes(tree, PSET, rng, p_node=p)
            for old, new in zip(tree, child):
                if has_alternative(old):
                    trials += 1
                    changed += new is not old
                else:
                    assert new is old
    sd = math.sqrt(p * (1 - p) / trials)
    assert trials > 3000
    assert abs(changed / trials - p) < 4 * sd, (changed, trials)


# ------------------------------------------------------------------------------- selection

def fake_population(values):
    return [SimpleNamespace(name=f"ind{i}", fitness=SimpleNamespace(values=(v,)))
            for i, v in enumerate(values)]


class RecordingRng(random.Random):
    """A seeded Random that remembers what sample() drew."""

    def __init__(self, seed):
        super().__init__(seed)
        self.pools = []

    def sample(self, population, k, **kw):
        pool = super().sample(population, k, **kw)
        self.pools.append(list(pool))
        return pool


def value(ind):
    return ind.fitness.values[0]


def test_pool_topk_ratio1_k1_is_always_the_global_best():
    values = [0.3, -0.2, 0.9, 0.1, 0.5, 0.85, -1.0, 0.4]
    pop = fake_population(values)
    rng = random.Random(0)
    picks = {select_pool_topk(pop, rng, ratio=1.0, k=1).name for _ in range(200)}
    assert picks == {"ind2"}


def test_pool_topk_ratio1_k3_picks_each_of_the_three_best_only():
    values = [0.3, -0.2, 0.9, 0.1, 0.5, 0.85, -1.0, 0.4]
    pop = fake_population(values)
    rng = random.Random(1)
    counts = {}
    for _ in range(600):
        name = select_pool_topk(pop, rng, ratio=1.0, k=3).name
        counts[name] = counts.get(name, 0) + 1
    assert set(counts) == {"ind2", "ind5", "ind4"}  # 0.9, 0.85, 0.5
    assert all(c > 120 for c in counts.values()), counts  # roughly uniform (expected 200 each)


@pytest.mark.parametrize("ratio,k", [(0.5, 1), (0.5, 3), (0.3, 2)])
def test_pool_topk_picks_within_the_top_k_of_the_drawn_pool(ratio, k):
    rng0 = random.Random(7)
    values = [rng0.uniform(-1, 1) for _ in range(20)]
    pop = fake_population(values)
    rng = RecordingRng(3)
    outside_global_topk = 0
    global_top = sorted(pop, key=value, reverse=True)[:k]
    for _ in range(300):
        pick = select_pool_topk(pop, rng, ratio=ratio, k=k)
        pool = rng.pools[-1]
        assert len(pool) == max(k, round(ratio * len(pop)))
        top = sorted(pool, key=value, reverse=True)[:k]
        assert any(pick is t for t in top)
        outside_global_topk += all(pick is not g for g in global_top)
    # the pool really restricts the choice: the pick is often not among the global top k
    assert outside_global_topk > 30


def test_tournament_returns_the_best_of_the_drawn():
    rng0 = random.Random(11)
    pop = fake_population([rng0.uniform(-1, 1) for _ in range(15)])
    rng = RecordingRng(4)
    not_global_best = 0
    best = max(pop, key=value)
    for _ in range(300):
        pick = select_tournament(pop, rng, tournsize=3)
        drawn = rng.pools[-1]
        assert len(drawn) == 3
        assert pick is max(drawn, key=value)
        not_global_best += pick is not best
    assert not_global_best > 100
    assert SELECTIONS == {"topk": select_pool_topk, "tournament": select_tournament,
                          "double": select_double, "nsga2": select_tournament}


# ------------------------------------------------------------------------------- elitism

class Child:
    def __init__(self, tag):
        self.tag = tag
        self.fitness = SimpleNamespace(values=())

    def __repr__(self):
        return f"Child({self.tag})"


class ScriptedToolbox:
    """mutate returns the next scripted child, evaluate its scripted (jcm, reason)."""

    def __init__(self, script):
        self.children = [Child(i) for i in range(len(script))]
        self.results = {id(c): r for c, r in zip(self.children, script)}
        self.mutated = 0
        self.parents = []

    def mutate(self, parent):
        self.parents.append(parent)
        child = self.children[self.mutated]
        self.mutated += 1
        return child

    def breed(self, parent, mates=()):
        return self.mutate(parent)

    def evaluate(self, child):
        return self.results[id(child)]


def parent_with(v):
    return SimpleNamespace(fitness=SimpleNamespace(values=(v,)))


def test_elitism_accepts_first_child_within_margin():
    tb = ScriptedToolbox([(0.1, None), (0.3, None), (0.45, None), (0.9, None)])
    parent = parent_with(0.5)
    off = elitism_preserve(parent, tb, margin=0.1, max_tries=10)
    assert off.child is tb.children[2] and off.child.fitness.values == (0.45,)
    assert off.tries == 3 and tb.mutated == 3 and off.met_margin and off.rejects == {}
    assert all(p is parent for p in tb.parents)  # always mutates the parent, not a child


def test_elitism_margin_boundary_is_inclusive():
    tb = ScriptedToolbox([(0.2499, None), (0.25, None)])
    off = elitism_preserve(parent_with(0.5), tb, margin=0.25, max_tries=10)
    assert off.child is tb.children[1] and off.tries == 2 and off.met_margin


def test_elitism_counts_rejects_by_reason_and_keeps_trying():
    script = [(WORST, "constant"), (WORST, "terminal"), (WORST, "constant"), (0.0, None),
              (WORST, "invalid"), (0.6, None), (0.7, None)]
    tb = ScriptedToolbox(script)
    off = elitism_preserve(parent_with(0.5), tb, margin=0.1, max_tries=10)
    assert off.child is tb.children[5] and off.tries == 6 and off.met_margin
    assert off.rejects == {"constant": 2, "terminal": 1, "invalid": 1}
    assert tb.children[0].fitness.values == ()  # rejected children get no fitness


def test_elitism_bounded_by_max_tries_returns_best_valid_seen():
    script = [(0.1, None), (0.3, None), (WORST, "too_large"), (0.2, None), (0.05, None),
              (0.9, None)]
    tb = ScriptedToolbox(script)
    off = elitism_preserve(parent_with(0.5), tb, margin=0.1, max_tries=5)
    assert tb.mutated == 5  # the sixth (good) child is never drawn
    assert off.tries == 5 and not off.met_margin
    assert off.child is tb.children[1] and off.child.fitness.values == (0.3,)
    assert off.rejects == {"too_large": 1}


def test_elitism_no_valid_child_gives_none():
    tb = ScriptedToolbox([(WORST, "constant")] * 3 + [(WORST, "invalid")] * 3)
    off = elitism_preserve(parent_with(0.5), tb, margin=0.1, max_tries=4)
    assert off.child is None and not off.met_margin and off.tries == 4
    assert off.rejects == {"constant": 3, "invalid": 1} and tb.mutated == 4


def test_no_elitism_accepts_first_valid_child():
    tb = ScriptedToolbox([(WORST, "terminal"), (-0.8, None), (0.9, None)])
    off = elitism_preserve(parent_with(0.5), tb, margin=0.1, max_tries=10, elitism=False)
    assert off.child is tb.children[1] and off.child.fitness.values == (-0.8,)
    assert off.tries == 2 and off.met_margin and off.rejects == {"terminal": 1}


# ------------------------------------------------------------------------------- fitness

class FakeEvaluator:
    """scores(tree) from a table keyed by formula; evaluate_scores -> jcm = 0.25 + mean score."""

    def __init__(self, table):
        self.table = table
        self.score_calls = []
        self.evaluate_calls = 0

    def scores(self, tree):
        self.score_calls.append(str(tree))
        return {col: np.asarray(v, dtype=float) for col, v in self.table[str(tree)].items()}

    def evaluate_scores(self, scores):
        self.evaluate_calls += 1
        return SimpleNamespace(jcm=0.25 + float(np.mean([s.mean() for s in scores.values()])))


def tree(text):
    return parse_formula(text, PSET)


def test_memo_fitness_rejects_and_memo():
    good, good2 = "frobenius(msa_g)", "add(msa_numel, mlp_numel)"
    nan, const, half = "sum(mlp_w)", "frobenius(eye_msa_w)", "mean_abs(msa_a)"
    ev = FakeEvaluator({
        good: {"a": [0.1, 0.2, 0.3], "b": [0.0, 0.1, 0.2]},
        good2: {"a": [0.3, 0.2, 0.0], "b": [0.5, 0.1, 0.3]},
        nan: {"a": [0.1, float("nan"), 0.3], "b": [0.0, 0.1, 0.2]},
        const: {"a": [2.0, 2.0, 2.0], "b": [2.0, 2.0, 2.0]},
        half: {"a": [0.1, 0.2, 0.3], "b": [1.0, 1.0, 1.0]},  # constant on one data set
    })
    fit = MemoFitness(ev, max_nodes=5)
    assert fit(tree("msa_numel")) == (WORST, "terminal")
    assert fit(tree("sqrt(sqrt(sqrt(sqrt(sqrt(one)))))")) == (WORST, "too_large")  # 6 nodes
    assert ev.score_calls == []  # both decided without the evaluator
    assert fit(tree(nan)) == (WORST, "invalid")
    assert fit(tree(const)) == (WORST, "constant")
    assert fit(tree(half)) == (WORST, "constant")
    assert ev.evaluate_calls == 0  # degenerate proxies are never correlated
    value, reason = fit(tree(good))
    assert reason is None and value == pytest.approx(0.25 + (0.2 + 0.1) / 2)
    # identical trees (distinct objects, parsed again) are evaluated once
    for _ in range(3):
        assert fit(tree(good)) == (value, None)
        assert fit(as_individual(tree(nan))) == (WORST, "invalid")
    assert fit(tree(good2))[1] is None
    assert sorted(ev.score_calls) == sorted([nan, const, half, good, good2])
    assert ev.evaluate_calls == 2 and fit.evaluations == 5
    assert set(fit.phenotypes) == {good, good2}  # valid formulas only
    assert set(fit.memo) == {nan, const, half, good, good2}
    assert {r for _, r in fit.memo.values()} - {None} <= set(REJECT_REASONS)
    # a 5-node tree is still allowed (the limit is "more than max_nodes")
    ev.table["add(msa_numel, sqrt(sqrt(one)))"] = {"a": [0, 1, 2], "b": [2, 1, 0]}
    assert fit(tree("add(msa_numel, sqrt(sqrt(one)))"))[1] is None


# ------------------------------------------------------------------------------- plumbing

def test_ensure_creator_classes_is_idempotent():
    first = ensure_creator_classes()
    fitness_cls = creator.ProxyFitness
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # creator.create warns when it replaces a class
        second = ensure_creator_classes()
    assert second is first is creator.ProxyIndividual
    assert creator.ProxyFitness is fitness_cls
    ind = as_individual(tree("frobenius(msa_g)"))
    assert isinstance(ind, first) and isinstance(ind.fitness, fitness_cls)
    assert ind.fitness.weights == (1.0,) and not ind.fitness.valid


def test_two_toolboxes_are_independent():
    calls = {"fit": 0}

    def fitness(t):
        calls["fit"] += 1
        return 0.0, None

    config = SearchConfig(pop=4, iters=1, margin=10.0)
    tb1 = make_toolbox(PSET, fitness, config, random.Random(0))
    tb2 = make_toolbox(PSET, fitness, config, random.Random(0))
    original = tb2.mutate
    custom_calls = []

    def custom(t):
        custom_calls.append(str(t))
        return as_individual(tree("frobenius(msa_w)"))

    tb1.register("mutate", custom)
    assert tb2.mutate is original and tb1.mutate is not original
    parent = as_individual(tree("frobenius(msa_g)"))
    parent.fitness.values = (0.5,)
    off1 = tb1.vary(parent)
    assert custom_calls == ["frobenius(msa_g)"] and str(off1.child) == "frobenius(msa_w)"
    off2 = tb2.vary(parent)  # still the node mutation: never the custom one
    assert custom_calls == ["frobenius(msa_g)"]
    assert off2.child is not None and isinstance(off2.child, creator.ProxyIndividual)
    for name in ("generate", "evaluate", "select", "mutate", "vary"):
        assert hasattr(tb1, name) and hasattr(tb2, name)
