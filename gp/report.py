"""What an evolution prints when it ends: the answer, its JCMs, and the other rule's answer."""
from __future__ import annotations

from pathlib import Path

RULES = {"best": "best JCM", "cv": "cross-validated choice", "ensemble": "ensemble",
         "bagged": "bagged: ensemble of the bags' answers"}


def answer_text(result: dict) -> str:
    """The formula, or an ensemble's members."""
    if result.get("formula") is None and result.get("members"):
        return f"ensemble of {len(result['members'])}: " + "; ".join(result["members"])
    return result["formula"]


def part_line(name: str, part) -> str:
    if part is None:
        return f"{name:6s} none: --split all searched on every record (no test part)"
    per = ", ".join(f"{c}: {v['kendall']:.4f}" if v else f"{c}: invalid" for c, v in part["datasets"].items())
    spaces = part.get("per_space")
    joint = "  per space " + ", ".join(f"{s} {v:.4f}" for s, v in spaces.items()) if spaces else ""
    return f"{name:6s} JCM {part['jcm']:.4f}  tied pairs {part['tied_share']:.3f}  (Kendall {per}){joint}"


def ceiling_lines(result: dict) -> list:
    """After the result: each part's JCM with its 95% bootstrap interval, and the part's ceiling
    (the best one score per arch can do there) with the JCM's share of it."""
    lines = []
    for name in ("search", "test"):
        part = result.get(name) if result.get("finished") else None
        if part and part.get("jcm_interval"):
            low, high = part["jcm_interval"]
            share = part["ceiling_share"]
            lines.append(f"{name:6s} JCM {part['jcm']:.4f}, 95% interval [{low:.4f}, {high:.4f}]; ceiling "
                         f"{part['ceiling']:.4f} (without ties {part['ceiling_strict']:.4f}), share "
                         + (f"{share:.3f}" if share is not None else "n/a"))
    return lines


def format_result(result: dict, out: Path) -> str:
    if not result["finished"]:
        return f"stopped at iteration {result['iteration']}; continue with --resume"
    beside = result["beside"]
    jcms = ", ".join(f"{p} {beside[p]['jcm']:.4f}" for p in ("search", "test") if beside[p])
    lines = [f"proxy ({RULES[result['choice']]}, {result['evaluations']} evaluations, {result['seconds']:.1f} s, "
             f"stopped on {result['stopped']}): {answer_text(result)}",
             part_line("search", result["search"]), part_line("test", result["test"]),
             f"beside it ({RULES[beside['rule']]}): {answer_text(beside)}  {jcms}",
             f"written: {out / 'best.json'}, {out / 'history.json'}, {out / 'jcm.png'}, {out / 'pareto.json'}"]
    return "\n".join(lines + ceiling_lines(result))
