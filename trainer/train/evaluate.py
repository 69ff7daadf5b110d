"""Test-split evaluation: metrics from scikit-learn, written as files a person can open.

Writes into the model folder `metrics.json` (accuracy, top-k, per-class precision/recall/F1,
confusion matrix), `confusion_matrix.csv` / `.png`, `training_curves.png`, `errors.csv` +
`errors.png` (most confident mistakes first, with their uri, since a confident mistake is most
often a wrong label in the source), `embedding_pca.png`, `reliability.png` and `report.html`
showing all of it.  The probabilities reported are the calibrated ones the export serves
(trainer.uncertainty: one temperature fitted on the validation split).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Mapping, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from sklearn import metrics as sk_metrics

from schemas import record
from trainer.report import plots, thumbnails
from trainer.train import training_report as report
from trainer.train.config import TrainConfig
from trainer.train.data.dataset import TrainingData, evaluation_dataset
from trainer.train.data.views import views_by_run
from trainer.uncertainty import assess, calibration
from trainer.uncertainty.logits import HeadLogits, mean_of_softmaxes

METRICS_FILE = "metrics.json"
CONFUSION_CSV = "confusion_matrix.csv"
CONFUSION_PNG = "confusion_matrix.png"
CURVES_PNG = "training_curves.png"
ERRORS_CSV = "errors.csv"
ERRORS_PNG = "errors.png"
PCA_PNG = "embedding_pca.png"
ERRORS_SHOWN = 16  # the grid in errors.png


@dataclasses.dataclass(frozen=True)
class Predictions:
    """The model's output on one split, row-aligned with the records it came from."""

    label_ids: np.ndarray  # int [N], true class ids
    probabilities: np.ndarray  # float32 [N, C]
    uris: list[str]
    features: np.ndarray  # float32 [N, D], what the head saw (z-scored transfer values)
    logits: Optional[np.ndarray] = None  # float32 [N, C]: softmax(logits) = probabilities
    single_view_accuracy: float | None = None  # with TTA: view 0's own accuracy, for comparison

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def accuracy(self) -> float:
        return float(sk_metrics.accuracy_score(self.label_ids, self.predicted))


def predict_split(model: keras.Model, training_data: TrainingData, split: str,
                  config: TrainConfig, transform=None) -> Predictions:
    """One row per image (view 0); with `config.tta` its probabilities are the mean of the
    head's on the image and on its mirror (view -1), and its logits their log."""
    label_ids, logits, uris, inputs, image_ids, views = [], [], [], [], [], []
    head_logits = HeadLogits(model)
    for batch in evaluation_dataset(training_data, split, config, transform, tta=config.tta):
        features, label_id, uri = batch[:3]
        logits.append(head_logits(features).numpy())
        label_ids.append(label_id.numpy())
        uris.extend(u.decode("utf-8") for u in uri.numpy())
        inputs.append(features.numpy())
        if config.tta:
            image_ids.extend(batch[3].numpy())
            views.append(batch[4].numpy())
    all_logits = np.concatenate(logits)
    predictions = Predictions(np.concatenate(label_ids), tf.nn.softmax(all_logits).numpy(), uris,
                              np.concatenate(inputs), all_logits)
    if config.tta:
        return _mean_with_mirrors(predictions, image_ids, np.concatenate(views))
    return predictions


def _mean_with_mirrors(predictions: Predictions, image_ids: Sequence[bytes],
                       views: np.ndarray) -> Predictions:
    """Rows of views 0 and -1 → one row per image (the view-0 row) with the mean probability
    (an image whose mirror the extract job lost keeps its own)."""
    original = np.flatnonzero(views == record.ORIGINAL_VIEW)
    mirror_of = {image_ids[i]: i for i in np.flatnonzero(views == record.MIRROR_VIEW)}
    mirrors = np.array([mirror_of.get(image_ids[i], i) for i in original], dtype=np.int64)
    probabilities = (predictions.probabilities[original] + predictions.probabilities[mirrors]) / 2
    logits = mean_of_softmaxes(predictions.logits[original], predictions.logits[mirrors]).numpy()
    label_ids = predictions.label_ids[original]
    single_view = float(np.mean(predictions.probabilities[original].argmax(axis=1) == label_ids))
    return Predictions(label_ids, probabilities, [predictions.uris[i] for i in original],
                       predictions.features[original], logits, single_view)


def split_transfer_values(training_data: TrainingData, config: TrainConfig):
    """split → its raw transfer values (view 0) batch by batch: what the export's OOD
    description samples and thresholds (trainer.uncertainty.assess)."""
    def values_of(split: str):
        for values, _, _ in evaluation_dataset(training_data, split, config).as_numpy_iterator():
            yield values

    return values_of


def top_k_accuracy(test: Predictions, k_max: int) -> dict[str, float]:
    """{"top_1": …, "top_k": …}: share of records whose true class is among the k likeliest."""
    ranked = np.argsort(-test.probabilities, axis=1, kind="stable")
    hits = ranked == test.label_ids[:, None]
    return {f"top_{k}": float(hits[:, :k].any(axis=1).mean())
            for k in range(1, min(k_max, test.probabilities.shape[1]) + 1)}


def classification_metrics(test: Predictions, labels: Sequence[str]) -> dict:
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix (rows: true)."""
    class_ids = list(range(len(labels)))
    precision, recall, f1, support = sk_metrics.precision_recall_fscore_support(
        test.label_ids, test.predicted, labels=class_ids, zero_division=0)
    matrix = sk_metrics.confusion_matrix(test.label_ids, test.predicted, labels=class_ids)
    per_class = {label: {"precision": float(precision[i]), "recall": float(recall[i]),
                         "f1": float(f1[i]), "support": int(support[i])}
                 for i, label in enumerate(labels)}
    return {"test_accuracy": test.accuracy, "per_class": per_class,
            "confusion_matrix": matrix.tolist(), "labels": list(labels)}


def format_confusion_matrix(matrix: Sequence[Sequence[int]], labels: Sequence[str]) -> str:
    """A plain-text table, true classes down, predicted across."""
    width = max(max(len(label) for label in labels), max(len(str(n)) for row in matrix
                                                          for n in row), len("true\\pred"))
    lines = [" ".join(["true\\pred".ljust(width)] + [label.rjust(width) for label in labels])]
    for label, row in zip(labels, matrix):
        lines.append(" ".join([label.ljust(width)] + [str(n).rjust(width) for n in row]))
    return "\n".join(lines)


def write_confusion_csv(matrix: Sequence[Sequence[int]], labels: Sequence[str],
                        path: str) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([""] + list(labels))
        for label, row in zip(labels, matrix):
            writer.writerow([label] + list(row))


def confident_mistakes(test: Predictions) -> tuple[np.ndarray, np.ndarray]:
    """Indices of misclassified records, most confident first, and every record's confidence."""
    predicted = test.predicted
    confidence = test.probabilities[np.arange(len(predicted)), predicted]
    wrong = np.flatnonzero(predicted != test.label_ids)
    return wrong[np.argsort(-confidence[wrong], kind="stable")], confidence


def write_errors_csv(test: Predictions, labels: Sequence[str], path: str) -> int:
    """Misclassified test records, most confident first; returns how many."""
    predicted = test.predicted
    wrong, confidence = confident_mistakes(test)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([record.URI, "true", "predicted", "confidence"])
        for i in wrong:
            writer.writerow([test.uris[i], labels[test.label_ids[i]], labels[predicted[i]],
                             f"{confidence[i]:.6f}"])
    return len(wrong)


def evaluate(model: keras.Model, training_data: TrainingData, config: TrainConfig,
             model_dir: str, history: Mapping[str, Sequence[float]], transform=None,
             known: Optional[dict] = None) -> tuple[dict, float]:
    """Evaluate the (restored best) model, calibrate it, write the report files (with `known`
    figures, e.g. the OOD description's); return the metrics and the fitted temperature."""
    labels = training_data.labels
    test = predict_split(model, training_data, "test", config, transform)
    validation = predict_split(model, training_data, "validation", config, transform)
    calibrated = assess.assess(validation, test, model_dir)
    test = dataclasses.replace(test, probabilities=calibration.tempered(
        test.logits, calibrated.temperature))  # what the export serves
    metrics = classification_metrics(test, labels)
    metrics["calibration"] = calibrated.as_metrics()
    metrics.update(known or {})
    metrics["top_k_accuracy"] = top_k_accuracy(test, config.top_k)
    metrics["validation_accuracy"] = validation.accuracy
    metrics["counts"] = {split: training_data.counts(split) for split in record.SPLITS}
    metrics["runs"] = [run.run_id for run in training_data.runs]
    metrics["backbone"] = training_data.fingerprint
    metrics["tta"] = config.tta  # probabilities averaged over each image and its mirror
    if config.tta:  # what the mirror bought: the same head on the originals alone
        metrics["without_tta"] = {"test_accuracy": test.single_view_accuracy,
                                  "validation_accuracy": validation.single_view_accuracy}
    metrics["views"] = views_by_run(training_data.runs)  # what the runs cached (manifest)
    if training_data.excluded:  # tv-train --exclude: records per split left out
        metrics["excluded"] = {"images": sum(training_data.excluded.values()),
                               **training_data.excluded}
    metrics["normalisation"] = (f"tensorflow-transform graph of run {transform.run_dir}"
                                if transform is not None else "Normalization layer in the head")
    metrics["errors"] = write_errors_csv(test, labels, os.path.join(model_dir, ERRORS_CSV))
    with open(os.path.join(model_dir, METRICS_FILE), "w") as f:
        json.dump(metrics, f, indent=2)
    write_confusion_csv(metrics["confusion_matrix"], labels, os.path.join(model_dir, CONFUSION_CSV))
    write_pictures(test, metrics, history, training_data, model_dir)
    report.write_report(model_dir, metrics, config)
    print(format_confusion_matrix(metrics["confusion_matrix"], labels))
    return metrics, calibrated.temperature


def write_pictures(test: Predictions, metrics: dict, history: Mapping[str, Sequence[float]],
                   training_data: TrainingData, model_dir: str) -> None:
    """confusion_matrix.png, training_curves.png, errors.png and embedding_pca.png."""
    labels = training_data.labels
    plots.plot_confusion_matrix(np.asarray(metrics["confusion_matrix"]), labels,
                                os.path.join(model_dir, CONFUSION_PNG))
    plots.plot_training_curves(history, os.path.join(model_dir, CURVES_PNG))
    wrong, confidence = confident_mistakes(test)
    shown = wrong[:ERRORS_SHOWN]
    loader = thumbnails.ThumbnailLoader(training_data.runs)
    plots.plot_errors([loader.load(test.uris[i]) for i in shown],
                      [f"true {labels[test.label_ids[i]]}\npred {labels[test.predicted[i]]}"
                       f" {confidence[i]:.2f}" for i in shown],
                      os.path.join(model_dir, ERRORS_PNG))
    plots.plot_embedding_pca(test.features, test.label_ids, labels,
                             os.path.join(model_dir, PCA_PNG))
