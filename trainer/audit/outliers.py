"""Outliers, read off the nearest-neighbour lists.

An outlier is an image far from all others: its score is the mean cosine distance to its k
nearest neighbours; it is flagged when that distance is extreme against the collection's own
spread (median + `OUTLIER_MADS` scaled median absolute deviations), so no absolute threshold
depends on the backbone.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from trainer.audit.neighbours import Neighbours

OUTLIER_MADS = 5.0


@dataclasses.dataclass(frozen=True)
class Outliers:
    distance: np.ndarray  # float64 [N] mean cosine distance to the k nearest neighbours
    flagged: np.ndarray  # bool [N]
    neighbour_label: np.ndarray  # int64 [N] most common label among the neighbours
    order: np.ndarray  # most isolated first


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
