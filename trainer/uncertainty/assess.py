"""After fitting: the temperature and the OOD description a head is exported with, measured.

`describe_training_data` streams the train split's transfer values (view 0) once into a bounded
uniform sample (the knn description), sets the threshold that keeps 95 % of the validation
split in, and measures the share of the test split kept (metrics.json's `ood`).  `assess` fits
the temperature on the validation split, measures ECE and NLL on the test split before and after
(metrics.json's `calibration`) and draws reliability.png.  The export takes exactly these.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Iterable, Optional, Protocol

import numpy as np

from trainer.uncertainty import calibration, ood
from trainer.uncertainty.plots import plot_reliability

RELIABILITY_PNG = "reliability.png"


class SplitOutputs(Protocol):
    """What evaluation gives per split (trainer.evaluate.Predictions)."""

    @property
    def label_ids(self) -> np.ndarray: ...

    @property
    def logits(self) -> Optional[np.ndarray]: ...


@dataclasses.dataclass(frozen=True)
class Uncertainty:
    """What the serving export needs: T (1.0: probabilities as the head gives them) and the
    thresholded OOD description (None: no ood_score)."""

    temperature: float = 1.0
    ood: Optional[ood.OodDescription] = None


SplitValues = Callable[[str], Iterable[np.ndarray]]  # split → its raw transfer values, batched


def describe_training_data(values_of: SplitValues, seed: int = 0
                           ) -> tuple[ood.OodDescription, dict[str, Any]]:
    """The thresholded knn description of the train split and metrics.json's `ood`, from the
    splits' raw transfer values (view 0; trainer.train streams them)."""
    reservoir = ood.KnnReservoir(ood.KNN_SAMPLE, seed=seed)
    for values in values_of("train"):
        reservoir.add(values)
    description = reservoir.description(ood.KNN_K, ood.TRANSFER_VALUES)
    scorer = ood.OodScorer(description)

    def split_scores(split: str) -> np.ndarray:
        found = [ood.scores(scorer, v) for v in values_of(split)]
        return np.concatenate(found) if found else np.zeros(0, np.float32)

    validation = split_scores("validation")
    if len(validation):
        description = description.with_threshold(validation)
    test = split_scores("test")
    metrics = {**description.describe(),
               "test_in_distribution": float(np.mean(test <= description.threshold))
               if len(test) else None,
               "test_median_score": float(np.median(test)) if len(test) else None}
    return description, metrics


def assess(validation: SplitOutputs, test: SplitOutputs,
           model_dir: Optional[str] = None) -> calibration.Calibration:
    """Fit the temperature on validation, measure it on test, draw reliability.png."""
    result = calibration.calibrate(validation.logits, validation.label_ids, test.logits,
                                   test.label_ids)
    if model_dir is not None:
        plot_reliability(
            calibration.reliability(calibration.tempered(test.logits, 1.0), test.label_ids),
            calibration.reliability(calibration.tempered(test.logits, result.temperature),
                                    test.label_ids),
            os.path.join(model_dir, RELIABILITY_PNG), result.temperature)
    return result
