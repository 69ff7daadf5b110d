"""Near-duplicate pairs and outliers, both read off the nearest-neighbour lists.

A near duplicate is a pair whose cosine similarity reaches `DUPLICATE_SIMILARITY` (re-encoded,
resized or lightly edited copies of one picture land there; distinct photos of one product
rarely do: measured in BENCHMARKS.md).  Pairs are oriented so that `b` is the copy to drop: across
splits `a` is the evaluation-side image (test, then validation) so excluding every `b` removes
the leak without changing the test set; within a split, `b` is the later uri.

An outlier is an image far from all others: its score is the mean cosine distance to its k
nearest neighbours; it is flagged when that distance is extreme against the collection's own
spread (median + `OUTLIER_MADS` scaled median absolute deviations), so no absolute threshold
depends on the backbone.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from trainer.audit.neighbours import Neighbours

DUPLICATE_SIMILARITY = 0.95
OUTLIER_MADS = 5.0
_SPLIT_RANK = {"test": 0, "validation": 1, "train": 2}  # kept side first


@dataclasses.dataclass(frozen=True)
class Pairs:
    a: np.ndarray  # int64 [P] rows of the image to keep
    b: np.ndarray  # int64 [P] rows of its copy
    similarity: np.ndarray  # float32 [P], most similar first


def near_duplicates(neighbours: Neighbours, uris: np.ndarray, splits: np.ndarray,
                    threshold: float = DUPLICATE_SIMILARITY) -> Pairs:
    """Every pair (once) with similarity ≥ threshold among the k nearest neighbours."""
    rows, cols = np.nonzero((neighbours.similarities >= threshold) & (neighbours.indices >= 0))
    i, j = rows.astype(np.int64), neighbours.indices[rows, cols]
    sims = neighbours.similarities[rows, cols]
    best: dict[tuple[int, int], float] = {}
    for x, y, sim in zip(i.tolist(), j.tolist(), sims.tolist()):
        best[(min(x, y), max(x, y))] = sim

    def kept_first(x: int, y: int) -> tuple[int, int]:
        key_x = (_SPLIT_RANK.get(splits[x], 3), uris[x])
        key_y = (_SPLIT_RANK.get(splits[y], 3), uris[y])
        return (x, y) if key_x <= key_y else (y, x)

    oriented = sorted(((*kept_first(x, y), sim) for (x, y), sim in best.items()),
                      key=lambda p: (-p[2], uris[p[0]], uris[p[1]]))
    return Pairs(np.asarray([p[0] for p in oriented], np.int64),
                 np.asarray([p[1] for p in oriented], np.int64),
                 np.asarray([p[2] for p in oriented], np.float32))


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
