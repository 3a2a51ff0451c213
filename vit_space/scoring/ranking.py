"""Rank bench archs with proxies and measure how well each ranking matches the true accuracies."""
from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Optional

from vit_space.core.atomic import atomic_write, write_json_atomic
from vit_space.core.errors import BadInput
from vit_space.data.bench import column_for
from vit_space.scoring.baseline_scores import baseline_scores
from vit_space.scoring.ceiling import ceiling_fields, jcm_ceiling, proxy_fields
from vit_space.scoring.ensemble import rank_average
from vit_space.scoring.evaluator import JCMSettings, ProxyEvaluator, result_from_scores
from vit_space.scoring.proxies import resolve_proxy
from vit_space.setup_run import DataSetup


def proxy_scores(s: DataSetup, proxies: list, indices: list, aggregate: str = "sum") -> dict:
    """{proxy name: {column: scores over `indices`}} for direct baselines, trees and ensembles
    (the rank-average of their members' scores over these archs)."""
    ensembles = [p for p in proxies if p.is_ensemble]
    members = {m.name: m for p in ensembles for m in map(resolve_proxy, p.members)}
    singles = [p for p in proxies if not p.is_ensemble]
    named = {p.name for p in singles}
    out = _single_scores(s, singles + [m for m in members.values() if m.name not in named], indices, aggregate)
    for p in ensembles:
        out[p.name] = rank_average([out[m] for m in p.members])
    return {p.name: out[p.name] for p in proxies}


def _single_scores(s: DataSetup, proxies: list, indices: list, aggregate: str) -> dict:
    columns = {d: column_for(d, s.acc, s.bench.space) for d in s.datasets}
    archs = s.bench.archs(indices)
    out = {}
    direct = [p.name for p in proxies if p.formula is None]
    if direct:
        scores = baseline_scores(direct, s.bench.space, archs, s.datasets, s.cfg, s.cache.root,
                                 s.device, "all", s.n_jobs, s.backend, s.scheduler, s.progress)
        for name in direct:
            out[name] = {columns[d]: scores[name][d] for d in s.datasets}
    trees = [p for p in proxies if p.formula is not None]
    if trees:
        evaluator = ProxyEvaluator(s.bench, indices, s.datasets, s.acc, s.cfg, s.cache, s.device,
                                   aggregate, progress=s.progress, n_jobs=s.n_jobs,
                                   backend=s.backend, scheduler=s.scheduler)
        for p in trees:
            out[p.name] = evaluator.scores(p.tree)
    return out


def rank(s: DataSetup, proxies: list, split: str, aggregate: str = "sum",
         settings: JCMSettings = JCMSettings(), plot_dir: Optional[Path] = None,
         scores_path: Optional[Path] = None) -> dict:
    """Correlations and JCM of each proxy on the split; per-arch scores to SCORES_PATH if given."""
    indices = s.bench.split(split, s.split_seed)
    columns = [column_for(d, s.acc, s.bench.space) for d in s.datasets]
    accuracies = {c: s.bench.accuracies(indices, c) for c in columns}  # validate before any work
    scores = proxy_scores(s, proxies, indices, aggregate)
    ceiling = jcm_ceiling(accuracies)  # the best any one score per arch can do on these archs
    report = {"space": s.bench.space, "split": split, "n": len(indices), **ceiling_fields(ceiling),
              "proxies": {}}
    for name, per_column in scores.items():
        result = result_from_scores(per_column, accuracies, settings)
        report["proxies"][name] = result.as_json()  # correlations, JCM and the tied-pair share
        if _plain_jcm(settings):  # the interval and ceiling are of the default JCM
            report["proxies"][name].update(proxy_fields(per_column, accuracies, result.jcm, ceiling.value))
        if plot_dir is not None:
            plot_scatter(name, per_column, accuracies, Path(plot_dir), result.datasets)
    if scores_path is not None:
        write_score_rows(scores_path, score_rows(s, split, indices, scores, accuracies))
    return report


def _plain_jcm(settings: JCMSettings) -> bool:
    """Mean Kendall tau-b with equal weights: the JCM the ceiling and the interval are of."""
    return settings.metric == "kendall" and not settings.absolute and not settings.weights


# ---------------------------------------------------------------- per-arch scores out

SCORE_FORMATS = (".csv", ".json")


def check_scores_path(path) -> Path:
    """--scores FILE: written as CSV or JSON by its extension (BadInput for any other)."""
    path = Path(path)
    if path.suffix.lower() not in SCORE_FORMATS:
        raise BadInput(f"--scores {path}: expected a file ending in .csv or .json")
    return path


def score_rows(s: DataSetup, split: str, indices: list, scores: dict, accuracies: dict) -> list:
    """One row per (arch, data set, proxy): the bench index, the arch's fields, the score (None
    where the proxy is invalid) and the true accuracy (None where the bench has none), so
    proxies can be combined and tested outside this library."""
    datasets = {column_for(d, s.acc, s.bench.space): d for d in s.datasets}
    rows = []
    for i, index in enumerate(indices):
        arch = s.bench.records[index]["arch"]
        for column, dataset in datasets.items():
            for proxy, per_column in scores.items():
                value = float(per_column[column][i])
                rows.append({"index": index, "space": s.bench.space, "split": split, **arch,
                             "dataset": dataset, "column": column, "proxy": proxy,
                             "score": value if math.isfinite(value) else None,
                             "accuracy": accuracies[column][i]})
    return rows


def write_score_rows(path: Path, rows: list) -> None:
    """JSON: a list of row objects (arch lists as lists). CSV: one line per row, lists as JSON
    text, invalid scores and missing accuracies as empty cells."""
    if Path(path).suffix.lower() == ".json":
        write_json_atomic(path, rows)
        return
    fields = list(rows[0]) if rows else ["index", "dataset", "proxy", "score", "accuracy"]

    def cell(value):
        return "" if value is None else json.dumps(value) if isinstance(value, list) else value

    def write(name):
        with open(name, "w", newline="") as f:
            out = csv.DictWriter(f, fieldnames=fields)
            out.writeheader()
            out.writerows({k: cell(v) for k, v in row.items()} for row in rows)
    atomic_write(path, write)


def scatter_figure(name: str, scores, acc: list, column: str, tau: Optional[dict]):
    """Score-vs-accuracy scatter of one proxy and column. The x ticks are few and in scientific
    notation past 1e4 (one shared exponent), so large scores never print overlapping labels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    pairs = [(s, a) for s, a in zip(scores, acc) if a is not None]
    ax.scatter([p[0] for p in pairs], [p[1] for p in pairs], s=12)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4), useMathText=True)
    ax.set_title(f"{name[:40]} vs {column}\nKendall {tau['kendall']:.3f}" if tau else f"{name[:40]} (invalid)",
                 fontsize=9)
    ax.set_xlabel("proxy score")
    ax.set_ylabel(column)
    fig.tight_layout()
    return fig


def plot_scatter(name: str, per_column: dict, accuracies: dict, out: Path, corr: dict) -> None:
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80]
    for column, scores in per_column.items():
        fig = scatter_figure(name, scores, accuracies[column], column, corr.get(column))
        fig.savefig(out / f"{stem}__{column}.png", dpi=90)
        plt.close(fig)


def _interval_text(entry: dict) -> str:
    interval = entry.get("jcm_interval")
    return f"[{interval[0]:6.3f}, {interval[1]:6.3f}]" if interval else "-"


def _share_text(entry: dict) -> str:
    share = entry.get("ceiling_share")
    return f"{share:6.3f}" if share is not None else "-"


def format_table(report: dict) -> str:
    """Kendall / Spearman / Pearson per data set and JCM, one row per proxy, with the JCM's 95%
    bootstrap interval and its share of the ceiling (the best one score per arch can do)."""
    names = list(report["proxies"])
    columns = list(next(iter(report["proxies"].values()))["datasets"]) if names else []
    width = max([len(n) for n in names] + [5])
    width = min(width, 60)
    head = f"{'proxy':{width}s} " + " ".join(f"{c[:-4]:>20s}" for c in columns) + f" {'JCM':>7s} {'ties':>6s}" \
        + f" {'JCM 95% interval':>16s} {'share':>6s}"
    lines = [f"{report['space']} bench, {report['split']} split, n = {report['n']}",
             f"{'':{width}s} " + " ".join(f"{'tau / rho / r':>20s}" for _ in columns), head]
    for name in names:
        entry = report["proxies"][name]
        cells = []
        for c in columns:
            v = entry["datasets"][c]
            cells.append(f"{v['kendall']:6.3f}/{v['spearman']:6.3f}/{v['pearson']:6.3f}" if v else f"{'invalid':>20s}")
        shown = name if len(name) <= width else name[:width - 3] + "..."
        lines.append(f"{shown:{width}s} " + " ".join(f"{x:>20s}" for x in cells) + f" {entry['jcm']:7.3f} {entry.get('tied_share') or 0:6.3f}"
                     + f" {_interval_text(entry):>16s} {_share_text(entry):>6s}")
    if report.get("ceiling") is not None:
        lines.append(f"ceiling (the best JCM of one score per arch on these {report['n']} archs, "
                     f"ties allowed): {report['ceiling']:.3f}; without ties {report['ceiling_strict']:.3f}; "
                     "share = JCM / ceiling; interval: archs resampled 1000 times")
    return "\n".join(lines)
