"""Rank bench archs with proxies and measure how well each ranking matches the true accuracies."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from vit_space.data.bench import column_for
from vit_space.scoring.baseline_scores import baseline_scores
from vit_space.scoring.evaluator import JCMSettings, ProxyEvaluator, result_from_scores
from vit_space.setup_run import DataSetup


def proxy_scores(s: DataSetup, proxies: list, indices: list, aggregate: str = "sum") -> dict:
    """{proxy name: {column: scores over `indices`}} for direct baselines and trees alike."""
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
    return {p.name: out[p.name] for p in proxies}


def rank(s: DataSetup, proxies: list, split: str, aggregate: str = "sum",
         settings: JCMSettings = JCMSettings(), plot_dir: Optional[Path] = None) -> dict:
    indices = s.bench.split(split, s.split_seed)
    columns = [column_for(d, s.acc, s.bench.space) for d in s.datasets]
    accuracies = {c: s.bench.accuracies(indices, c) for c in columns}  # validate before any work
    scores = proxy_scores(s, proxies, indices, aggregate)
    report = {"space": s.bench.space, "split": split, "n": len(indices), "proxies": {}}
    for name, per_column in scores.items():
        result = result_from_scores(per_column, accuracies, settings)
        report["proxies"][name] = result.as_json()  # correlations, JCM and the tied-pair share
        if plot_dir is not None:
            plot_scatter(name, per_column, accuracies, Path(plot_dir), result.datasets)
    return report


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


def format_table(report: dict) -> str:
    """Kendall / Spearman / Pearson per data set and JCM, one row per proxy."""
    names = list(report["proxies"])
    columns = list(next(iter(report["proxies"].values()))["datasets"]) if names else []
    width = max([len(n) for n in names] + [5])
    width = min(width, 60)
    head = f"{'proxy':{width}s} " + " ".join(f"{c[:-4]:>20s}" for c in columns) + f" {'JCM':>7s} {'ties':>6s}"
    lines = [f"{report['space']} bench, {report['split']} split, n = {report['n']}",
             f"{'':{width}s} " + " ".join(f"{'tau / rho / r':>20s}" for _ in columns), head]
    for name in names:
        entry = report["proxies"][name]
        cells = []
        for c in columns:
            v = entry["datasets"][c]
            cells.append(f"{v['kendall']:6.3f}/{v['spearman']:6.3f}/{v['pearson']:6.3f}" if v else f"{'invalid':>20s}")
        shown = name if len(name) <= width else name[:width - 3] + "..."
        lines.append(f"{shown:{width}s} " + " ".join(f"{x:>20s}" for x in cells) + f" {entry['jcm']:7.3f} {entry.get('tied_share') or 0:6.3f}")
    return "\n".join(lines)
