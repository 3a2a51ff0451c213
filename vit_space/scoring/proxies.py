"""What a proxy name means: a direct baseline, a discovered proxy shipped in results/, or a formula.

Discovered proxies are the `results/<name>.json` files written from a search's best.json; each is
usable by its file name (e.g. `autoprox-autoformer`) wherever a proxy is accepted. A file whose
`members` lists proxies (formulas or baseline names) is an ensemble: the rank-average of its
members (vit_space.scoring.ensemble).
"""
from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from typing import Optional

from primitives import FormulaError, parse_formula
from vit_space.core.errors import BadInput
from vit_space.data.bench import REPO_ROOT
from vit_space.scoring.baselines import BASELINES
from vit_space.stats.terminals import vit_primitive_set

RESULTS_DIR = REPO_ROOT / "results"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")  # how proxy names look (formulas hold parentheses)

# Baselines the primitive set can express, written as trees over the ViT statistics. On full
# (unsketched) statistics each equals the direct baseline with scope="blocks" (tests check it).
BASELINE_TREES = {
    "params": "add(msa_numel, mlp_numel)",
    "grad_norm": "add(mul(rms(msa_g), sqrt(msa_numel)), mul(rms(mlp_g), sqrt(mlp_numel)))",
    "snip": "add(mul(mean_abs(mul(msa_w, msa_g)), msa_numel), mul(mean_abs(mul(mlp_w, mlp_g)), mlp_numel))",
    "dss": "add(mul(nuclear(msa_g), nuclear(msa_w)), mul(mean_abs(mul(mlp_w, mlp_g)), mlp_numel))",
}


def _results():
    """(name, data) of each readable results/<name>.json holding an object."""
    for path in sorted(RESULTS_DIR.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            yield path.stem, data


def discovered_proxies() -> dict:
    """name -> formula of the single-tree proxies shipped under results/."""
    return {name: data["formula"] for name, data in _results() if isinstance(data.get("formula"), str)}


def discovered_ensembles() -> dict:
    """name -> member list of the ensembles shipped under results/."""
    return {name: tuple(data["members"]) for name, data in _results()
            if isinstance(data.get("members"), list) and data["members"]
            and all(isinstance(m, str) for m in data["members"])}


@dataclass
class Proxy:
    name: str
    formula: Optional[str]  # None for a direct baseline and for an ensemble
    kind: str  # "baseline" | "discovered" | "formula" | "ensemble"
    members: tuple = ()  # an ensemble's member proxies, as names or formulas

    @property
    def tree(self):
        return parse_formula(self.formula, vit_primitive_set())

    @property
    def is_ensemble(self) -> bool:
        return self.kind == "ensemble"


def ensemble_proxy(members, name: Optional[str] = None) -> Proxy:
    """An ensemble of MEMBERS (baseline names or formulas, each checked), named NAME or
    `ensemble(m1; m2; ...)`."""
    members = tuple(members)
    if not members:
        raise BadInput("an ensemble needs at least one member")
    for member in members:
        if resolve_proxy(member).is_ensemble:
            raise BadInput(f"ensemble member {member}: expected a baseline or a formula, not an ensemble")
    return Proxy(name or f"ensemble({'; '.join(members)})", None, "ensemble", members)


def unknown_name(text: str, names: list) -> BadInput:
    """The error for a proxy name nobody knows: every known name, the closest to `text` first."""
    close = difflib.get_close_matches(text, names, n=len(names), cutoff=0.6)
    ordered = ", ".join(close + [n for n in names if n not in close])
    return BadInput(f"--proxy {text}: unknown proxy name (expected one of {ordered}, or a formula)")


def resolve_proxy(text: str) -> Proxy:
    if text in BASELINES:
        return Proxy(text, None, "baseline")
    discovered = discovered_proxies()
    if text in discovered:
        return Proxy(text, discovered[text], "discovered")
    ensembles = discovered_ensembles()
    if text in ensembles:
        return ensemble_proxy(ensembles[text], text)
    names = list(BASELINES) + list(discovered) + list(ensembles)
    # a bare name (discovered names hold '-'), unless it is a Scalar terminal, a formula by itself
    if _NAME.fullmatch(text) and text not in ("msa_numel", "mlp_numel"):
        raise unknown_name(text, names)
    try:
        parse_formula(text, vit_primitive_set())
    except FormulaError as exc:
        if difflib.get_close_matches(text, names, n=1, cutoff=0.8):  # a misspelt name, not a formula
            raise unknown_name(text, names) from None
        raise BadInput(f"--proxy: {exc}") from None
    return Proxy(text, text, "formula")


def resolve_proxies(text: str) -> list:
    """`all` = every baseline and every discovered proxy; else a comma-free single proxy or a
    semicolon-separated list."""
    if text == "all":
        return [Proxy(n, None, "baseline") for n in BASELINES] + \
               [Proxy(n, f, "discovered") for n, f in discovered_proxies().items()] + \
               [ensemble_proxy(m, n) for n, m in discovered_ensembles().items()]
    return [resolve_proxy(part.strip()) for part in text.split(";") if part.strip()]
