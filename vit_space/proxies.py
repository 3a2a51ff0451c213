"""What a proxy name means: a direct baseline, a discovered proxy shipped in results/, or a formula.

Discovered proxies are the `results/<name>.json` files written from a search's best.json; each is
usable by its file name (e.g. `autoprox-autoformer`) wherever a proxy is accepted.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

from primitives import FormulaError, parse_formula
from vit_space.baselines import BASELINES
from vit_space.bench import REPO_ROOT
from vit_space.errors import BadInput
from vit_space.terminals import vit_primitive_set

RESULTS_DIR = REPO_ROOT / "results"

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


def resolve_proxy(text: str) -> Proxy:
    if text in BASELINES:
        return Proxy(text, None, "baseline")
    discovered = discovered_proxies()
    if text in discovered:
        return Proxy(text, discovered[text], "discovered")
    if "(" not in text and text.isidentifier() and text not in ("msa_numel", "mlp_numel"):
        names = ", ".join(list(BASELINES) + list(discovered))
        raise BadInput(f"--proxy {text}: unknown proxy name (expected one of {names}, or a formula)")
    try:
        parse_formula(text, vit_primitive_set())
    except FormulaError as exc:
        raise BadInput(f"--proxy: {exc}") from None
    return Proxy(text, text, "formula")


def resolve_proxies(text: str) -> list:
    """`all` = every baseline and every discovered proxy; else a comma-free single proxy or a
    semicolon-separated list."""
    if text == "all":
        return [Proxy(n, None, "baseline") for n in BASELINES] + \
               [Proxy(n, f, "discovered") for n, f in discovered_proxies().items()]
    return [resolve_proxy(part.strip()) for part in text.split(";") if part.strip()]
