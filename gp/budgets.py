"""Named search budgets: a preset of SearchConfig values; flags given explicitly override them.

paper: Algorithm 1 as published (P = 20, T = 200, node mutation, no crossover, best-JCM answer).
large: what about five minutes of warm evaluation on 2 CPU cores affords, fixed as a count of
evaluations (distinct trees scored) so runs are reproducible anywhere; population 50, typed
subtree crossover, parsimony within Kendall-sized JCM ties, and the cross-validated choice.
"""
from __future__ import annotations

from gp.search import SearchConfig

LARGE_EVALS = 1500

BUDGETS = {
    "paper": {},
    "large": dict(pop=50, iters=1_000_000, evals=LARGE_EVALS, cxpb=0.5, parsimony=True,
                  tie_tol=0.01, checkpoint_every=100,
                  hof=20, choose="cv"),
}


def preset_values(field: str) -> dict:
    """{budget: its value of the SearchConfig field}, for help texts that show what each preset sets."""
    return {name: getattr(SearchConfig(**preset), field) for name, preset in BUDGETS.items()}


def describe_presets(field: str) -> str:
    """E.g. "paper: 20, large: 50": each budget's value of FIELD."""
    return ", ".join(f"{name}: {value:g}" if isinstance(value, float) else f"{name}: {value}"
                     for name, value in preset_values(field).items())


def budget_config(name: str, **overrides) -> SearchConfig:
    """The budget's SearchConfig with `overrides` (e.g. flags the user gave) applied."""
    from vit_space.core.errors import BadInput
    if name not in BUDGETS:
        raise BadInput(f"--budget {name}: expected one of {', '.join(BUDGETS)}")
    return SearchConfig(**{**BUDGETS[name], **overrides})
