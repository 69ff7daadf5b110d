"""Which given labels look wrong: confident learning (cleanlab) on out-of-fold probabilities.

cleanlab estimates, per pair of classes, how often one is labelled as the other, and flags the
examples that most plausibly account for it (`find_label_issues`); `get_label_quality_scores`
ranks every example by how well its given label fits.  The probabilities it sees may blend the
head's out-of-fold predictions with the label distribution of the image's nearest neighbours
(`knn_weight`): a mislabelled image usually sits among images of its true class.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from trainer.audit.neighbours import Neighbours

KNN_WEIGHT = 0.5  # measured: BENCHMARKS.md, "Data audit"
_KNN_PRIOR = 1.0  # pseudo-count spread over the classes, so an empty vote is not certainty


@dataclasses.dataclass(frozen=True)
class LabelIssues:
    """Per example: quality of the given label (low = suspicious), the label the model would
    give, whether cleanlab flags it; `order` lists examples most suspicious first."""

    scores: np.ndarray
    suggested: np.ndarray
    flagged: np.ndarray
    order: np.ndarray


def neighbour_label_distribution(neighbours: Neighbours, label_ids: np.ndarray,
                                 num_classes: int) -> np.ndarray:
    """float64 [N, C]: similarity-weighted share of each class among an image's neighbours."""
    valid = neighbours.indices >= 0
    weights = np.where(valid, np.clip(neighbours.similarities, 0.0, None), 0.0)
    votes = np.zeros((len(label_ids), num_classes), np.float64)
    neighbour_labels = label_ids[np.where(valid, neighbours.indices, 0)]
    rows = np.repeat(np.arange(len(label_ids)), neighbours.indices.shape[1])
    np.add.at(votes, (rows, neighbour_labels.ravel()), weights.ravel())
    votes += _KNN_PRIOR / num_classes
    return votes / votes.sum(axis=1, keepdims=True)


def blend(head_probabilities: np.ndarray, knn_probabilities: np.ndarray | None,
          knn_weight: float) -> np.ndarray:
    if knn_probabilities is None or knn_weight <= 0:
        return head_probabilities
    mixed = (1.0 - knn_weight) * head_probabilities + knn_weight * knn_probabilities
    return mixed / mixed.sum(axis=1, keepdims=True)


def find_label_issues(label_ids: np.ndarray, probabilities: np.ndarray) -> LabelIssues:
    """cleanlab's flags and scores; ties in the ranking broken by row order (stable)."""
    from cleanlab.filter import find_label_issues as cleanlab_issues
    from cleanlab.rank import get_label_quality_scores

    scores = get_label_quality_scores(label_ids, probabilities)
    flagged = cleanlab_issues(label_ids, probabilities, n_jobs=1)
    return LabelIssues(scores=np.asarray(scores, np.float64),
                       suggested=probabilities.argmax(axis=1),
                       flagged=np.asarray(flagged, bool),
                       order=np.argsort(scores, kind="stable"))
