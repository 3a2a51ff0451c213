"""User formulas are parsed, never evaluated as Python: hostile or malformed text is refused with
a one-line FormulaError, and proxy names resolve to baselines, discovered proxies or formulas."""

import builtins
import json

import pytest

from primitives import FormulaError, Scalar, parse_formula
from primitives.formula import MAX_FORMULA_CHARS
from vit_space.core.errors import BadInput
from vit_space.scoring import proxies
from vit_space.scoring.baselines import BASELINES
from vit_space.scoring.proxies import BASELINE_TREES, resolve_proxies, resolve_proxy
from vit_space.stats.terminals import vit_primitive_set


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "PWNED"
    assert not path.exists()
    return path


@pytest.fixture
def no_python_eval(monkeypatch):
    """Any call of eval/exec/compile during parsing is recorded (and refused)."""
    calls = []

    def trap(name):
        def fn(*args, **kwargs):
            calls.append((name, args[:1]))
            raise AssertionError(f"{name} called while parsing a formula")
        return fn

    for name in ("eval", "exec", "compile"):
        monkeypatch.setattr(builtins, name, trap(name))
    return calls


def hostile(marker):
    m = str(marker)
    deep = "abs(" * 1000 + "msa_numel" + ")" * 1000
    return {
        "import_system": f"__import__('os').system('touch {m}')",
        "import_system_bare": "__import__(os).system(touch)",
        "open_write": f"open('{m}', 'w').write('x')",
        "eval": "eval('1')",
        "exec": f"exec(\"open('{m}','w')\")",
        "lambda": "lambda: 0",
        "attribute": "msa_w.__class__",
        "dunder_chain": "msa_w.__class__.__mro__[1].__subclasses__()",
        "statement_after": "abs(msa_w); import os",
        "newline_statement": "abs(msa_w)\nimport os",
        "newline_call": f"add(msa_numel, mlp_numel)\n__import__('os').system('touch {m}')",
        "arith": "1+1",
        "number": "3",
        "unclosed": "abs(",
        "extra_paren": "abs())",
        "empty": "",
        "blank": "   ",
        "blank_newlines": "\n\t \n",
        "too_long": "a" * 20000,
        "too_long_formula": "add(" * 2600 + "msa_numel" + ", one)" * 2600,
        "deep_nesting": deep,
        "deep_parens": "(" * 1000 + "msa_numel" + ")" * 1000,
        "unknown_terminal": "add(msa_numel, nope)",
        "unknown_bare_terminal": "nope",
        "unknown_op": "frobnicate(msa_w)",
        "type_mismatch": "mul(msa_w, mlp_w)",
        "type_mismatch_nested": "frobenius(add(msa_w, msa_a))",
        "wrong_root": "abs(msa_w)",
        "wrong_root_gram": "gram(msa_w)",
        "gram_of_other_type": "frobenius(matmul(gram(msa_w), msa_a))",
        "tensor_before_gram": "frobenius(matmul(msa_a, gram(msa_ga)))",
        "old_eye": "div(one, sum(eye))",
        "wrong_arity_few": "add(msa_numel)",
        "wrong_arity_many": "abs(msa_numel, mlp_numel)",
        "no_args": "frobenius()",
        "terminal_called": "msa_numel(mlp_numel)",
        "op_as_terminal": "frobenius",
        "trailing_comma": "add(msa_numel, mlp_numel,)",
        "leading_comma": "add(, msa_numel, mlp_numel)",
        "two_expressions": "msa_numel mlp_numel",
        "internal_name": "frobenius:MsaWeight(msa_w)",
        "keyword_arg": "add(a=msa_numel, b=mlp_numel)",
        "subscript": "msa_numel[0]",
        "unicode_name": "\u0430bs(msa_numel)",  # Cyrillic 'a'
        "null_byte": "abs(msa_numel)\x00",
        "line_separator": "abs(msa_numel)\u2028import os",
        "string_literal": "'abs(msa_numel)'",
        "comment": "abs(msa_numel) # x",
        "semicolon_only": ";",
        "python_keyword_terminal": "add(msa_numel, None)",
    }


def _cases():
    return sorted(hostile("X"))


@pytest.mark.parametrize("case", _cases())
def test_hostile_and_malformed_formulas_are_refused(case, marker, no_python_eval):
    text = hostile(marker)[case]
    pset = vit_primitive_set()
    with pytest.raises(FormulaError) as info:
        parse_formula(text, pset)
    message = str(info.value)
    assert message and "\n" not in message and "\r" not in message, repr(message)
    assert len(message.splitlines()) == 1
    assert message.startswith("formula:")
    assert not marker.exists(), "the formula was executed"
    assert no_python_eval == []


def test_error_messages_name_the_culprit():
    pset = vit_primitive_set()
    cases = {
        "mul(msa_w, mlp_w)": ["mul(MsaWeight, MlpWeight)", "does not type-check"],
        "abs(msa_w)": ["MsaWeight", "expected Scalar"],
        "add(msa_numel, nope)": ["'nope'", "msa_w"],
        "frobnicate(msa_w)": ["'frobnicate'"],
        "1+1": ["'1'", "position 0"],
        "a" * 20000: [str(MAX_FORMULA_CHARS)],
        "abs(" * 1000 + "msa_numel" + ")" * 1000: ["200 levels"],
    }
    for text, parts in cases.items():
        with pytest.raises(FormulaError) as info:
            parse_formula(text, pset)
        for part in parts:
            assert part in str(info.value), (text[:40], str(info.value))


def test_non_string_input_is_refused():
    pset = vit_primitive_set()
    for value in (None, b"abs(msa_numel)", 3, ["msa_numel"]):
        with pytest.raises(FormulaError):
            parse_formula(value, pset)


def test_formula_error_is_a_value_error():
    assert issubclass(FormulaError, ValueError)


def test_valid_formulas_still_parse(no_python_eval):
    pset = vit_primitive_set()
    for text in list(BASELINE_TREES.values()) + [
            "msa_numel", "  add(msa_numel,mlp_numel)  ", "add(msa_numel,\n  mlp_numel)\n",
            "frobenius(matmul(gram(msa_ga), msa_a))", "logdet_gram(mul(mlp_w, mlp_g))",
            "div(one, sum(eye_msa_w))", "nuclear(matmul(eye_mlp_w, matmul(gram(mlp_w), gram(mlp_g))))",
            "add(sum(eye_msa_a), frobenius(matmul(gram(msa_w), msa_g)))", "abs(" * 150 + "msa_numel" + ")" * 150]:
        tree = parse_formula(text, pset)
        assert tree[0].ret is Scalar
        assert parse_formula(str(tree), pset) == tree
    assert no_python_eval == []


def test_nesting_limit_boundary():
    pset = vit_primitive_set()
    ok = "abs(" * 200 + "msa_numel" + ")" * 200
    assert len(parse_formula(ok, pset)) == 201
    with pytest.raises(FormulaError):
        parse_formula("abs(" * 201 + "msa_numel" + ")" * 201, pset)


# ------------------------------------------------------------------ resolve_proxy

@pytest.fixture
def no_discovered(tmp_path, monkeypatch):
    empty = tmp_path / "results"
    empty.mkdir()
    monkeypatch.setattr(proxies, "RESULTS_DIR", empty)
    return empty


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_names_resolve_to_baselines(name, no_discovered):
    proxy = resolve_proxy(name)
    assert (proxy.name, proxy.formula, proxy.kind) == (name, None, "baseline")


def test_formula_resolves_to_formula(no_discovered):
    for text in ("add(msa_numel, mlp_numel)", BASELINE_TREES["snip"], "msa_numel"):
        proxy = resolve_proxy(text)
        assert (proxy.name, proxy.formula, proxy.kind) == (text, text, "formula")
        assert str(proxy.tree) == str(parse_formula(text, vit_primitive_set()))


def test_unknown_name_lists_the_known_names(no_discovered):
    with pytest.raises(BadInput) as info:
        resolve_proxy("nope")
    message = str(info.value)
    assert "nope" in message and "\n" not in message
    for name in BASELINES:
        assert name in message


@pytest.mark.parametrize("text", ["mul(msa_w, mlp_w)", "abs(msa_w)", "__import__('os')", "abs(",
                                  "msa_w.__class__"])
def test_bad_formulas_resolve_to_bad_input(text, no_discovered, marker):
    with pytest.raises(BadInput) as info:
        resolve_proxy(text)
    assert "\n" not in str(info.value) and str(info.value).startswith("--proxy")
    assert not marker.exists()


def test_discovered_proxies_resolve(tmp_path, monkeypatch):
    results = tmp_path / "results"
    results.mkdir()
    (results / "found-one.json").write_text(json.dumps({"formula": "mul(msa_numel, mlp_numel)", "jcm": 0.5}))
    (results / "broken.json").write_text("{not json")
    (results / "no-formula.json").write_text(json.dumps({"jcm": 0.1}))
    monkeypatch.setattr(proxies, "RESULTS_DIR", results)
    proxy = resolve_proxy("found-one")
    assert (proxy.kind, proxy.formula) == ("discovered", "mul(msa_numel, mlp_numel)")
    with pytest.raises(BadInput) as info:
        resolve_proxy("nope")
    assert "found-one" in str(info.value) and "broken" not in str(info.value)
    everything = resolve_proxies("all")
    assert [p.name for p in everything] == list(BASELINES) + ["found-one"]
    several = resolve_proxies("params; add(msa_numel, mlp_numel) ;found-one;")
    assert [(p.name, p.kind) for p in several] == [("params", "baseline"),
                                                  ("add(msa_numel, mlp_numel)", "formula"),
                                                  ("found-one", "discovered")]
