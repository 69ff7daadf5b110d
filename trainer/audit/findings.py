"""The audit itself: collection in, findings out (no files), so benchmarks and tests can call
it on arrays and the CLI only adds reading and writing."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from beam_jobs.cli.errors import UserError
from trainer.audit import duplicates as dup
from trainer.audit import label_issues as li
from trainer.audit.collection import Collection
from trainer.audit.folds import FoldConfig, out_of_fold_probabilities
from trainer.audit.neighbours import EXACT_LIMIT, Neighbours, nearest_neighbours
from trainer.audit.outliers import OUTLIER_MADS, Outliers, outliers, with_ood_scores
from trainer.audit.pixels import PixelReader


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    folds: FoldConfig = FoldConfig()
    k: int = 20  # nearest neighbours per image (label votes, duplicates, outliers); measured
    knn_weight: float = li.KNN_WEIGHT
    duplicate_rule: str = dup.DUPLICATE_RULE
    duplicate_standout: float = dup.DUPLICATE_STANDOUT
    duplicate_similarity: float = dup.DUPLICATE_SIMILARITY
    duplicate_pixels: float = dup.DUPLICATE_PIXELS
    outlier_mads: float = OUTLIER_MADS
    exact_limit: int = EXACT_LIMIT

    def __post_init__(self) -> None:
        if self.k < 1:
            raise UserError(f"--k must be at least 1, got {self.k}.")
        if not 0.0 <= self.knn_weight <= 1.0:
            raise UserError(f"--knn_weight must lie in [0, 1], got {self.knn_weight}.")
        if not 0.0 < self.duplicate_similarity <= 1.0:
            raise UserError("--duplicate_similarity must lie in (0, 1].")
        if not 0.0 < self.duplicate_pixels <= 1.0:
            raise UserError("--duplicate_pixels must lie in (0, 1].")
        if self.duplicate_rule not in dup.RULES:
            raise UserError(f"--duplicate_rule must be one of {', '.join(dup.RULES)}, "
                            f"got {self.duplicate_rule}.")


@dataclasses.dataclass(frozen=True)
class Findings:
    label_issues: li.LabelIssues
    duplicates: dup.Pairs
    outliers: Outliers
    neighbours: Neighbours
    seconds: dict[str, float]


def check_collection(collection: Collection, data: str) -> None:
    """The sentences for collections an audit cannot judge."""
    if not np.any(collection.splits == "test"):
        raise UserError(f"The runs under {data} have no test split; the audit checks the test "
                        f"split for leaked duplicates, so extract one first.")
    if len(np.unique(collection.label_ids)) < 2:
        raise UserError(f"The runs under {data} hold a single class; label errors need at "
                        f"least 2.")


def run_audit(collection: Collection, config: AuditConfig = AuditConfig()) -> Findings:
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    neighbours = nearest_neighbours(collection.transfer_values, config.k, config.exact_limit)
    seconds["neighbours"] = time.perf_counter() - start
    start = time.perf_counter()
    head = out_of_fold_probabilities(collection.transfer_values, collection.label_ids,
                                     collection.image_ids, len(collection.labels), config.folds)
    seconds["out_of_fold"] = time.perf_counter() - start
    start = time.perf_counter()
    votes = li.neighbour_label_distribution(neighbours, collection.label_ids,
                                            len(collection.labels))
    issues = li.find_label_issues(collection.label_ids, li.blend(head, votes, config.knn_weight))
    seconds["cleanlab"] = time.perf_counter() - start
    start = time.perf_counter()
    read = PixelReader(collection.runs).read if config.duplicate_rule == "pixels" else None
    pairs = dup.near_duplicates(collection.transfer_values, neighbours, collection.uris,
                                collection.splits, config.duplicate_rule,
                                config.duplicate_standout, config.duplicate_similarity,
                                config.exact_limit, read, config.duplicate_pixels)
    seconds["duplicates"] = time.perf_counter() - start
    isolated = with_ood_scores(outliers(neighbours, collection.label_ids, len(collection.labels),
                                        config.outlier_mads),
                               collection.transfer_values, collection.splits)
    return Findings(issues, pairs, isolated, neighbours, seconds)
