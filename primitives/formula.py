"""Parse a proxy formula against a primitive set, and nothing else.

DEAP's `PrimitiveTree.from_string` falls back to Python's `eval` for unknown tokens; user text
must never reach it. This parser accepts only identifiers, parentheses and commas, resolves each
name against the set (ops are overloaded by argument type, as they print), and returns a tree.
"""
from __future__ import annotations

import re

from deap import gp

from primitives.pset import display_name

_TOKEN = re.compile(r"\s*(?:([A-Za-z_][A-Za-z0-9_]*)|(\()|(\))|(,))")
MAX_FORMULA_CHARS = 10_000


class FormulaError(ValueError):
    """A formula that is not a well-typed tree of the primitive set."""


def _tokens(text: str) -> list:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise FormulaError(f"formula: unexpected character {text[pos]!r} at position {pos} "
                               "(expected names, '(', ')' and ',')")
        out.append(match.group(match.lastindex))
        pos = match.end()
    return out


def _parse(tokens: list, pos: int, depth: int):
    if depth > 200:
        raise FormulaError("formula: nested more than 200 levels deep")
    if pos >= len(tokens) or not tokens[pos][0].isalpha() and tokens[pos][0] != "_":
        found = tokens[pos] if pos < len(tokens) else "end of text"
        raise FormulaError(f"formula: expected a name, found {found!r}")
    name, pos = tokens[pos], pos + 1
    if pos < len(tokens) and tokens[pos] == "(":
        args, pos = [], pos + 1
        while True:
            arg, pos = _parse(tokens, pos, depth + 1)
            args.append(arg)
            if pos < len(tokens) and tokens[pos] == ",":
                pos += 1
                continue
            if pos < len(tokens) and tokens[pos] == ")":
                return (name, args), pos + 1
            raise FormulaError(f"formula: expected ',' or ')' after an argument of {name}()")
    return (name, None), pos


def parse_formula(text: str, pset: gp.PrimitiveSetTyped) -> gp.PrimitiveTree:
    """The tree that `text` names; a FormulaError (one line) for anything else."""
    if not isinstance(text, str) or not text.strip():
        raise FormulaError("formula: empty (expected e.g. 'frobenius(msa_g)')")
    if len(text) > MAX_FORMULA_CHARS:
        raise FormulaError(f"formula: longer than {MAX_FORMULA_CHARS} characters")
    tokens = _tokens(text)
    node, end = _parse(tokens, 0, 0)
    if end != len(tokens):
        raise FormulaError(f"formula: unexpected {tokens[end]!r} after a complete expression")
    terminals = {t.value: t for typ in pset.terminals for t in pset.terminals[typ]
                 if isinstance(t, gp.Terminal)}
    by_name: dict = {}
    for typ in pset.primitives:
        for prim in pset.primitives[typ]:
            by_name.setdefault(display_name(prim), []).append(prim)
    nodes: list = []
    ret = _resolve(node, terminals, by_name, nodes)
    if ret is not pset.ret:
        raise FormulaError(f"formula: evaluates to {ret.__name__}, expected {pset.ret.__name__}")
    return gp.PrimitiveTree(nodes)


def _resolve(node, terminals, by_name, nodes) -> type:
    name, args = node
    if args is None:
        if name not in terminals:
            known = ", ".join(sorted(terminals))
            raise FormulaError(f"formula: unknown terminal {name!r} (expected one of {known})")
        nodes.append(terminals[name])
        return terminals[name].ret
    if name not in by_name:
        raise FormulaError(f"formula: unknown operation {name!r} (see the primitive set's ops)")
    slot = len(nodes)
    nodes.append(None)
    arg_types = tuple(_resolve(a, terminals, by_name, nodes) for a in args)
    for prim in by_name[name]:
        if tuple(prim.args) == arg_types:
            nodes[slot] = prim
            return prim.ret
    got = ", ".join(t.__name__ for t in arg_types)
    takes = "; ".join(", ".join(t.__name__ for t in p.args) for p in by_name[name])
    raise FormulaError(f"formula: {name}({got}) does not type-check (it takes: {takes})")


__all__ = ["FormulaError", "parse_formula"]
