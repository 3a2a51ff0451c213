"""What a search found, as text: the top archs, and the within-bench check of a proxy's top-1 pick.
"""
from __future__ import annotations

import math

import numpy as np

from vit_space.core.errors import BadInput
from vit_space.data.bench import column_for
from vit_space.data.datasets import NUM_CLASSES
from vit_space.scoring.ranking import proxy_scores
from vit_space.search.constraints import Constraints
from vit_space.search.strategies import TIE_KEYS, TIE_WORDS, ranking_key

# ---------------------------------------------------------------- within the bench

def within_bench(setup, proxy, split: str = "test", aggregate: str = "sum",
                 tie_key: str = "params") -> dict:
    """Pick the proxy's top-1 arch of the bench split, per data set: its true accuracy, its
    percentile among the split (100 = best; share of the other archs it matches or beats) and
    the best accuracy there, i.e. what a search restricted to trained archs would have found.
    Score ties are broken as the search breaks them (`tie_key` on the 224 px model)."""
    if tie_key not in TIE_KEYS:
        raise BadInput(f"--tie-key {tie_key}: expected one of {', '.join(TIE_KEYS)}")
    bench = setup.bench
    indices = bench.split(split, setup.split_seed)
    scores = proxy_scores(setup, [proxy], indices, aggregate)[proxy.name]
    report = {"space": bench.space, "proxy": proxy.name, "split": split, "n": len(indices),
              "tie_key": tie_key, "datasets": {}}
    for dataset in setup.datasets:
        column = column_for(dataset, setup.acc, bench.space)
        acc, values = bench.accuracies(indices, column), np.asarray(scores[column], dtype=float)
        known = [a for a in acc if a is not None]
        candidates = [i for i, a in enumerate(acc) if a is not None and math.isfinite(values[i])]
        if not candidates:
            report["datasets"][dataset] = None
            continue
        key = ranking_key(bench.space, Constraints(num_classes=NUM_CLASSES[dataset]), tie_key)
        pick = min(candidates, key=lambda i: key(bench.records[indices[i]]["arch"], values[i])[:2] + (i,))
        tied = sum(1 for i in candidates if values[i] == values[pick])
        beaten = sum(a <= acc[pick] for a in known) - 1
        report["datasets"][dataset] = {
            "column": column, "top1_index": indices[pick], "top1_arch": bench.records[indices[pick]]["arch"],
            "top1_score": float(values[pick]), "top1_acc": acc[pick], "tied_at_top": tied,
            "percentile": 100.0 * beaten / (len(known) - 1) if len(known) > 1 else 100.0,
            "best_acc": max(known)}
    return report



# ---------------------------------------------------------------- text tables

def arch_summary(arch: dict) -> str:
    """Scalars as written, short lists in full, per-block lists by their mean."""
    parts = []
    for key, value in arch.items():
        if not isinstance(value, list):
            parts.append(f"{key}={value}")
        elif len(value) <= 4:
            parts.append(f"{key}={','.join(str(v) for v in value)}")
        else:
            parts.append(f"{key}~{sum(value) / len(value):.2f}")
    return " ".join(parts)


def format_search_table(result: dict) -> str:
    lines = [f"{result['space']} {result['strategy']} search, proxy {result['proxy'][:60]} on "
             f"{result['dataset']}: {result['evaluated']} archs scored in {result['seconds']:.1f} s",
             f"ties broken by --tie-key {result['tie_key']} ({TIE_WORDS[result['tie_key']]}); "
             f"{result['tied_at_top']} scored arch(s) share the top score",
             f"{'rank':>4s} {'score':>12s} {'params(M)':>9s} {'GFLOPs':>7s}  arch"]
    for rank, entry in enumerate(result["top"], 1):
        score = f"{entry['score']:12.5g}" if entry["score"] is not None else f"{'invalid':>12s}"
        lines.append(f"{rank:4d} {score} {entry['params'] / 1e6:9.3f} {entry['flops'] / 1e9:7.3f}  "
                     f"{arch_summary(entry['arch'])}")
    return "\n".join(lines)


def format_within_table(report: dict) -> str:
    lines = [f"{report['space']} bench, {report['split']} split (n = {report['n']}), top-1 of "
             f"proxy {report['proxy'][:60]}, ties broken by --tie-key {report['tie_key']}",
             f"{'dataset':10s} {'top-1 acc':>9s} {'percentile':>10s} {'best acc':>8s} {'tied':>4s}  arch"]
    for dataset, entry in report["datasets"].items():
        if entry is None:
            lines.append(f"{dataset:10s} {'invalid':>9s}")
            continue
        lines.append(f"{dataset:10s} {entry['top1_acc']:9.2f} {entry['percentile']:10.1f} "
                     f"{entry['best_acc']:8.2f} {entry['tied_at_top']:4d}  {arch_summary(entry['top1_arch'])}")
    return "\n".join(lines)
