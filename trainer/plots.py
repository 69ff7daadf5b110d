"""The report's pictures, drawn with matplotlib's file-only Agg backend (no display needed)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless machines and CI have no display
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(matrix: np.ndarray, labels: Sequence[str], path: str) -> None:
    """Counts per (true, predicted) cell, rows normalised for colour so small classes show."""
    plt = _pyplot()
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    size = max(4.0, 0.5 * len(labels) + 2.0)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="share of true class")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(labels) <= 30:
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, str(count), ha="center", va="center",
                    color="white" if shares[i, j] > 0.5 else "black", fontsize=8)
    ax.set_title("Confusion matrix (test)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_training_curves(history: Mapping[str, Sequence[float]], path: str) -> None:
    """Loss and accuracy per epoch for train and validation, side by side."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for prefix, name in (("", "train"), ("val_", "validation")):
            values = history.get(prefix + metric)
            if values:
                ax.plot(range(1, len(values) + 1), values, marker=".", label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
