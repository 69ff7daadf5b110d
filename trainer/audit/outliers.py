"""Outliers, read off the nearest-neighbour lists.

An outlier is an image far from all others: its score is the mean cosine distance to its k
nearest neighbours; it is flagged when that distance is extreme against the collection's own
spread (median + `OUTLIER_MADS` scaled median absolute deviations), so no absolute threshold
depends on the backbone.

Beside it, every image's `ood_score` as an exported model computes it (trainer.uncertainty.ood,
the same code): cosine distance to the 5th nearest of a uniform 1,000-image sample of the train
split, `in_distribution` at the validation split's 95 % quantile.  Both are nearest-neighbour
cosine distances on the raw transfer values; the audit's asks which images stand apart from the
whole collection, the model's which stand apart from its train split (rank correlation 0.96 on
Fashion-MNIST, BENCHMARKS.md).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from trainer.audit.neighbours import Neighbours
from trainer.uncertainty import ood

OUTLIER_MADS = 5.0


@dataclasses.dataclass(frozen=True)
class Outliers:
    distance: np.ndarray  # float64 [N] mean cosine distance to the k nearest neighbours
    flagged: np.ndarray  # bool [N]
    neighbour_label: np.ndarray  # int64 [N] most common label among the neighbours
    order: np.ndarray  # most isolated first
    ood_score: np.ndarray | None = None  # float32 [N], as an exported model scores the image
    in_distribution: np.ndarray | None = None  # bool [N], at the export's threshold


def with_ood_scores(found: Outliers, transfer_values: np.ndarray, splits: np.ndarray,
                    seed: int = 0) -> Outliers:
    """`found` with every image's ood_score and in_distribution, the description fitted on the
    train split as tv-train fits it (unchanged when there is no train split)."""
    train = splits == "train"
    if not train.any():
        return found
    description = ood.fit_knn(transfer_values[train], ood.KNN_SAMPLE, ood.KNN_K, seed,
                              ood.TRANSFER_VALUES)
    scorer = ood.OodScorer(description)
    validation = splits == "validation"
    if validation.any():
        description = description.with_threshold(ood.scores(scorer, transfer_values[validation]))
    scores = ood.scores(scorer, transfer_values)
    return dataclasses.replace(found, ood_score=scores,
                               in_distribution=scores <= description.threshold)


def outliers(neighbours: Neighbours, label_ids: np.ndarray, num_classes: int,
             mads: float = OUTLIER_MADS) -> Outliers:
    valid = neighbours.indices >= 0
    distance = np.where(valid, 1.0 - neighbours.similarities, np.nan)
    mean_distance = np.nan_to_num(np.nanmean(distance, axis=1), nan=1.0)
    median = float(np.median(mean_distance))
    spread = 1.4826 * float(np.median(np.abs(mean_distance - median)))
    flagged = mean_distance > median + mads * max(spread, 1e-9)
    votes = np.zeros((len(label_ids), num_classes), np.int64)
    rows = np.repeat(np.arange(len(label_ids)), neighbours.indices.shape[1])
    np.add.at(votes, (rows[valid.ravel()], label_ids[neighbours.indices[valid]]), 1)
    return Outliers(mean_distance.astype(np.float64), flagged, votes.argmax(axis=1),
                    np.argsort(-mean_distance, kind="stable"))
