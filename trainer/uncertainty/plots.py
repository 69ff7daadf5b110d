"""reliability.png: accuracy against confidence on the test split, before and after calibration."""

from __future__ import annotations

import numpy as np

from trainer.uncertainty.calibration import Reliability


def plot_reliability(before: Reliability, after: Reliability, path: str,
                     temperature: float) -> None:
    """Two panels of bars (accuracy per confidence bin) against the diagonal; the gap between a
    bar's top and the diagonal is that bin's miscalibration, weighted by its share in the ECE."""
    import matplotlib

    matplotlib.use("Agg")  # headless machines and CI have no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.0, 4.2), sharey=True)
    for ax, table, title in ((axes[0], before, "before (T = 1)"),
                             (axes[1], after, f"after (T = {temperature:.3g})")):
        width = np.diff(table.edges)
        filled = table.counts > 0
        ax.bar(table.edges[:-1][filled], table.accuracy[filled], width=width[filled],
               align="edge", edgecolor="#225", color="#6a8fd8", label="accuracy")
        ax.bar(table.edges[:-1][filled], table.confidence[filled] - table.accuracy[filled],
               bottom=table.accuracy[filled], width=width[filled], align="edge",
               color="#e66", alpha=0.45, label="gap to confidence")
        ax.plot([0, 1], [0, 1], color="#444", linestyle="--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top probability)")
        ax.set_title(title)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="upper left")
    fig.suptitle("Reliability (test split)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
