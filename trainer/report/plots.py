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


def plot_errors(images: Sequence[np.ndarray | None], captions: Sequence[str], path: str) -> None:
    """A grid of the most confident mistakes; an unreadable image leaves a captioned blank."""
    plt = _pyplot()
    count = max(len(images), 1)
    columns = min(4, count)
    rows = (count + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.9 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    if not images:
        axes[0, 0].text(0.5, 0.5, "no mistakes on the test split", ha="center", va="center")
    for ax, image, caption in zip(axes.ravel(), images, captions):
        if image is None:
            ax.text(0.5, 0.5, "image not readable\nfrom its uri", ha="center", va="center",
                    fontsize=8, color="gray")
        else:
            ax.imshow(image, interpolation="nearest")
        ax.set_title(caption, fontsize=8)
    fig.suptitle("Most confident mistakes (test)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_embedding_pca(features: np.ndarray, label_ids: np.ndarray, labels: Sequence[str],
                       path: str, max_points: int = 5000, seed: int = 0) -> None:
    """The head's inputs projected on their first two principal components, one colour per
    class: tight, separate clouds mean a linear head has an easy job."""
    from sklearn.decomposition import PCA

    plt = _pyplot()
    rng = np.random.default_rng(seed)
    keep = np.arange(len(features))
    if len(keep) > max_points:
        keep = np.sort(rng.choice(keep, max_points, replace=False))
    fig, ax = plt.subplots(figsize=(7, 6))
    if len(keep) >= 2 and features.shape[1] >= 2:
        pca = PCA(n_components=2, random_state=seed)
        points = pca.fit_transform(features[keep])
        colours = plt.get_cmap("tab20" if len(labels) > 10 else "tab10")
        for class_id, label in enumerate(labels):
            mine = label_ids[keep] == class_id
            if mine.any():
                ax.scatter(points[mine, 0], points[mine, 1], s=6, alpha=0.6, label=label,
                           color=colours(class_id % colours.N))
        share = pca.explained_variance_ratio_
        ax.set_xlabel(f"PC 1 ({share[0]:.0%} of variance)")
        ax.set_ylabel(f"PC 2 ({share[1]:.0%} of variance)")
        ax.legend(markerscale=3, fontsize=8, loc="best")
        outside = _zoom_to_bulk(ax, points)
        title = f"Test transfer values, 2-D PCA ({len(keep)} points"
        ax.set_title(title + (f", {outside} outliers out of view)" if outside else ")"))
    else:
        ax.set_title("Test transfer values: too few to project")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _zoom_to_bulk(ax, points: np.ndarray, share: float = 0.995) -> int:
    """Limit the axes to the central `share` of points on each axis (plus a margin), so one
    far outlier does not squash every class into a line; returns how many are left out."""
    low = np.quantile(points, (1 - share) / 2, axis=0)
    high = np.quantile(points, 1 - (1 - share) / 2, axis=0)
    margin = 0.1 * np.maximum(high - low, 1e-9)
    low, high = low - margin, high + margin
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(low[1], high[1])
    return int(np.sum(np.any((points < low) | (points > high), axis=1)))


def plot_tuning(trial_ids: Sequence[str], val_accuracies: Sequence[float | str], chosen: str,
                path: str, heads: Sequence[str] = ()) -> None:
    """Best validation accuracy of each head-search trial in the order they ran, with the best
    so far as a step line: whether more trials still paid off shows at a glance.  `heads`:
    a short name per trial ("softmax", "2x512") written beside its point."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(trial_ids) + 3.0), 4))
    order = np.arange(len(trial_ids))
    scores = np.array([np.nan if v == "" else float(v) for v in val_accuracies])
    ax.plot(order, scores, "o", color="tab:blue", label="trial (best epoch)")
    ax.step(order, np.fmax.accumulate(scores), where="post", color="tab:gray", alpha=0.7,
            label="best so far")
    if chosen in trial_ids:
        i = list(trial_ids).index(chosen)
        ax.plot(i, scores[i], "*", color="tab:red", markersize=16, label=f"chosen: {chosen}")
    for i, head in enumerate(heads):
        if not np.isnan(scores[i]):
            ax.annotate(head, (i, scores[i]), textcoords="offset points", xytext=(4, 4),
                        fontsize=7, color="dimgray")
    failed = np.isnan(scores)
    if failed.any():
        bottom = np.nanmin(scores) if not failed.all() else 0.0
        ax.plot(order[failed], np.full(failed.sum(), bottom), "x", color="black",
                label="failed")
    ax.set_xticks(order, list(trial_ids), rotation=90 if len(trial_ids) > 20 else 0)
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy")
    ax.margins(y=0.12)  # room for the labels above the top point
    ax.set_title(f"Head search: {len(trial_ids)} trials")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
