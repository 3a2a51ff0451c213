"""The JCM-over-iterations plot of a search."""
from __future__ import annotations

from pathlib import Path


def plot_history(history: list, path: Path, title: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iters = [h["iter"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(iters, [h["best"] for h in history], label="best JCM")
    ax.plot(iters, [h["mean"] for h in history], label="mean JCM")
    ax.set_xlabel("iteration")
    ax.set_ylabel("JCM (search split)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
