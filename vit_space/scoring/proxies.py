"""What a proxy name means: a direct baseline, a discovered proxy shipped in results/, or a formula.

Discovered proxies are the `results/<name>.json` files written from a search's best.json; each is
usable by its file name (e.g. `autoprox-autoformer`) wherever a proxy is accepted.
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


def discovered_proxies() -> dict:
    """name -> formula of the proxies shipped under results/."""
    found = {}
    for path in sorted(RESULTS_DIR.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("formula"), str):
            found[path.stem] = data["formula"]
    return found


@dataclass
class Proxy:
    name: str
    formula: Optional[str]  # None for a direct baseline
    kind: str  # "baseline" | "discovered" | "formula"

    @property
    def tree(self):
        return parse_formula(self.formula, vit_primitive_set())


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
    names = list(BASELINES) + list(discovered)
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
               [Proxy(n, f, "discovered") for n, f in discovered_proxies().items()]
    return [resolve_proxy(part.strip()) for part in text.split(";") if part.strip()]
