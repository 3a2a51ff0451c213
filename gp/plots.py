"""The JCM-over-iterations plot of a search, with the population's distinct phenotypes."""
from __future__ import annotations

from pathlib import Path
from typing import Optional


def plot_history(history: list, path: Path, title: str = "", ceiling: Optional[float] = None) -> None:
    """Best and mean JCM per iteration; `ceiling`, the best JCM one score per arch can reach on
    the search part (vit_space.scoring.ceiling), as a labelled line: how much room is left."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    bags = sorted({h["bag"] for h in history if "bag" in h})
    if bags:  # a bagged run (gp.bagging): each bag's best JCM on its own resample
        for bag in bags:
            part = [h for h in history if h.get("bag") == bag]
            ax.plot([h["iter"] for h in part], [h["best"] for h in part], label=f"bag {bag} best JCM")
        history = []  # no mean or phenotype lines across bags
    iters = [h["iter"] for h in history]
    if history:
        ax.plot(iters, [h["best"] for h in history], label="best JCM")
        ax.plot(iters, [h["mean"] for h in history], label="mean JCM")
    if ceiling is not None:
        ax.axhline(ceiling, color="tab:red", linestyle="--", linewidth=1,
                   label=f"ceiling {ceiling:.3f} (one score per arch)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("JCM (search split)")
    ax.set_title(title)
    lines, labels = ax.get_legend_handles_labels()
    if history and all("phenotypes" in h for h in history):  # a collapse of diversity shows here
        twin = ax.twinx()
        twin.plot(iters, [h["phenotypes"] for h in history], color="tab:green", linestyle=":",
                  label="distinct phenotypes")
        twin.set_ylabel("distinct phenotypes")
        twin.set_ylim(bottom=0)
        more = twin.get_legend_handles_labels()
        lines, labels = lines + more[0], labels + more[1]
    ax.legend(lines, labels, fontsize=8)
    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
