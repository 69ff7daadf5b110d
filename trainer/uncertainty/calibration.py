"""Temperature scaling: one number, fitted on the validation split, that makes confidences honest.

A head trained with label smoothing is under-confident on its own data, and any softmax head is
over-confident on images unlike its data; dividing the logits by one temperature T (Guo et al.,
2017, "On Calibration of Modern Neural Networks") fixes the first without touching the class
ranking, since every class's score is scaled alike.  T minimises the negative log-likelihood of
the validation split; the expected calibration error (ECE, 15 equal-width confidence bins) and
the NLL on the test split say what it bought.

Inputs are logits, or any per-row shift of them: log-probabilities give the same result, which is
how a `--tta` head (the mean of two softmaxes) is calibrated, on the log of its mean probability.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy import optimize, special

ECE_BINS = 15
TEMPERATURE_RANGE = (0.1, 10.0)  # a fitted T outside this says the head is broken, not shy


def negative_log_likelihood(logits: np.ndarray, label_ids: np.ndarray,
                            temperature: float = 1.0) -> float:
    """Mean −log p(true class) under softmax(logits / T)."""
    log_p = special.log_softmax(np.asarray(logits, np.float64) / temperature, axis=1)
    return float(-np.mean(log_p[np.arange(len(label_ids)), np.asarray(label_ids)]))


def fit_temperature(logits: np.ndarray, label_ids: np.ndarray) -> float:
    """The T in TEMPERATURE_RANGE minimising the NLL of softmax(logits / T).

    One bounded scalar search on log T: the NLL is smooth and unimodal in it, so Brent's method
    converges in a few dozen evaluations of a vectorised NLL.  Without a single mistake (or a
    single row) the NLL only falls as T → 0, which says nothing about unseen images: T stays 1.
    """
    logits = np.asarray(logits, np.float64)
    if len(label_ids) == 0 or np.all(logits.argmax(axis=1) == np.asarray(label_ids)):
        return 1.0
    low, high = (math.log(t) for t in TEMPERATURE_RANGE)
    found = optimize.minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, label_ids, math.exp(log_t)),
        bounds=(low, high), method="bounded", options={"xatol": 1e-4})
    return float(math.exp(found.x))


def tempered(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T), float32, rows summing to 1."""
    return special.softmax(np.asarray(logits, np.float64) / temperature, axis=1).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Reliability:
    """Per confidence bin: its mean confidence, its accuracy and how many rows fell in it."""

    edges: np.ndarray  # float [B + 1], 0 … 1
    confidence: np.ndarray  # float [B], nan where empty
    accuracy: np.ndarray  # float [B], nan where empty
    counts: np.ndarray  # int [B]


def reliability(probabilities: np.ndarray, label_ids: np.ndarray,
                bins: int = ECE_BINS) -> Reliability:
    """The reliability diagram's data: rows binned by their top probability (right-closed
    bins, as Guo et al.)."""
    probabilities = np.asarray(probabilities, np.float64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(label_ids)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(which, confidence, bins) / counts
        accuracy = np.bincount(which, correct.astype(np.float64), bins) / counts
    return Reliability(edges, mean_confidence, accuracy, counts)


def expected_calibration_error(probabilities: np.ndarray, label_ids: np.ndarray,
                               bins: int = ECE_BINS) -> float:
    """Σ_b (n_b / N) · |accuracy_b − confidence_b| over equal-width bins of the top probability."""
    table = reliability(probabilities, label_ids, bins)
    filled = table.counts > 0
    if not filled.any():
        return 0.0
    gaps = np.abs(table.accuracy[filled] - table.confidence[filled])
    return float(np.sum(table.counts[filled] * gaps) / table.counts.sum())


@dataclasses.dataclass(frozen=True)
class Calibration:
    """What metrics.json records under `calibration` (test-split figures)."""

    temperature: float
    ece: float  # calibrated
    ece_uncalibrated: float
    nll: float  # calibrated
    nll_uncalibrated: float
    bins: int = ECE_BINS

    def as_metrics(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "ece": self.ece,
                "ece_uncalibrated": self.ece_uncalibrated, "nll": self.nll,
                "nll_uncalibrated": self.nll_uncalibrated, "ece_bins": self.bins,
                "fitted_on": "validation", "measured_on": "test"}


def calibrate(validation_logits: np.ndarray, validation_label_ids: np.ndarray,
              test_logits: np.ndarray, test_label_ids: np.ndarray) -> Calibration:
    """Fit T on validation; measure ECE and NLL on test before and after."""
    temperature = fit_temperature(validation_logits, validation_label_ids)
    before = tempered(test_logits, 1.0)
    after = tempered(test_logits, temperature)
    return Calibration(
        temperature=temperature,
        ece=expected_calibration_error(after, test_label_ids),
        ece_uncalibrated=expected_calibration_error(before, test_label_ids),
        nll=negative_log_likelihood(test_logits, test_label_ids, temperature),
        nll_uncalibrated=negative_log_likelihood(test_logits, test_label_ids))
