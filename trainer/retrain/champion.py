"""Champion and challenger: score both on the same test rows, promote by an atomic pointer.

The champion is re-scored, not trusted from its old metrics.json: the test split of today's
union of runs has grown since it was trained, and comparing numbers from two different test
sets would promote by luck.  Scoring uses each model's saved head (`head.keras`, transfer
values → probabilities) and the transform it was trained with, so nothing is re-extracted.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from schemas import record
from trainer.train import evaluate
from trainer.train.config import TrainConfig
from trainer.train.data.dataset import TrainingData, open_training_data

CURRENT = "current"
MODEL_INFO = "retrain.json"
TEST = record.SPLITS[2]


def write_model_info(model_dir: str, identifier: str, data: str, config: TrainConfig) -> None:
    """What re-scoring this model later needs: its labels, backbone and transform run."""
    from trainer.train.data.transform import choose_transform_run

    training_data = open_training_data(data)
    transform_run = choose_transform_run(training_data.runs)
    info = {"model_id": identifier, "runs": [run.run_id for run in training_data.runs],
            "labels": list(training_data.labels), "fingerprint": training_data.fingerprint,
            "transform_run": _portable(transform_run.path, model_dir) if transform_run else None,
            "train": dataclasses.asdict(config)}
    with open(os.path.join(model_dir, MODEL_INFO), "w") as f:
        json.dump(info, f, indent=2)


def _portable(path: str, model_dir: str) -> str:
    """Local paths relative to the model folder, so a copied or moved workdir still works."""
    return path if "://" in path else os.path.relpath(path, model_dir)


def _transform_path(info: dict[str, Any], model_dir: str) -> str | None:
    path = info.get("transform_run")
    if not path:
        return None
    return path if "://" in path else os.path.normpath(os.path.join(model_dir, path))


def read_model_info(model_dir: str) -> dict[str, Any]:
    with open(os.path.join(model_dir, MODEL_INFO)) as f:
        return json.load(f)


def current(workdir: str) -> str | None:
    """The champion's model folder, or None before the first promotion."""
    pointer = os.path.join(workdir, CURRENT)
    return os.path.realpath(pointer) if os.path.isdir(pointer) else None


def promote(workdir: str, model_dir: str) -> None:
    """Point `current` at `model_dir`: a new symlink renamed over the old one (atomic)."""
    pointer = os.path.join(workdir, CURRENT)
    staging = f"{pointer}.next-{os.getpid()}"
    if os.path.lexists(staging):
        os.unlink(staging)
    os.symlink(os.path.relpath(model_dir, workdir), staging)
    os.replace(staging, pointer)


def test_accuracy(model_dir: str, training_data: TrainingData, config: TrainConfig) -> float:
    """Accuracy of the model's head on the union's test split, compared by label *name*
    (the model may know fewer classes than the union has; their rows count as mistakes)."""
    import keras

    from trainer.train.data.transform import TransferValueTransform
    from trainer.train.fit import HEAD_FILE

    info = read_model_info(model_dir)
    head = keras.models.load_model(os.path.join(model_dir, HEAD_FILE), compile=False)
    transform_path = _transform_path(info, model_dir)
    transform = TransferValueTransform(transform_path) if transform_path else None
    test = evaluate.predict_split(head, training_data, TEST, config, transform)
    predicted = np.asarray(info["labels"], dtype=object)[test.predicted]
    truth = np.asarray(training_data.labels, dtype=object)[test.label_ids]
    return float(np.mean(predicted == truth))


def score_both(challenger_dir: str, champion_dir: str | None, training_data: TrainingData,
               config: TrainConfig) -> dict[str, Any]:
    """Both models' test accuracy on exactly the same rows (the union's test split)."""
    rows = sum(training_data.counts(TEST).values())
    challenger = {"model_id": os.path.basename(challenger_dir), "test_rows": rows,
                  "test_accuracy": test_accuracy(challenger_dir, training_data, config)}
    if champion_dir is None:
        return {"challenger": challenger, "champion": None}
    champion = {"model_id": os.path.basename(champion_dir), "test_rows": rows}
    if read_model_info(champion_dir)["fingerprint"] != training_data.fingerprint:
        # Another backbone's head cannot read these transfer values: its own recorded figure.
        with open(os.path.join(champion_dir, evaluate.METRICS_FILE)) as f:
            champion.update(test_accuracy=json.load(f)["test_accuracy"], comparable=False)
    else:
        champion["test_accuracy"] = test_accuracy(champion_dir, training_data, config)
    return {"challenger": challenger, "champion": champion}


def decide(scores: dict[str, Any], margin: float) -> dict[str, Any]:
    """Promote only a challenger better than the champion by at least `margin` (and by more
    than nothing: a tie keeps the champion)."""
    challenger, champion = scores["challenger"], scores["champion"]
    if champion is None:
        return {"decision": "promoted", "promote": True, "reason": "no champion yet"}
    if champion["model_id"] == challenger["model_id"]:
        return {"decision": "kept", "promote": False,
                "reason": "the challenger is the champion (same runs and settings)"}
    gain = challenger["test_accuracy"] - champion["test_accuracy"]
    figures = (f"challenger {challenger['test_accuracy']:.4f} vs champion "
               f"{champion['test_accuracy']:.4f} on {challenger['test_rows']} test rows")
    if champion.get("comparable") is False:
        figures += " (champion: its recorded figure; it uses another backbone)"
    if gain > 0 and gain >= margin:
        return {"decision": "promoted", "promote": True,
                "reason": f"{figures}: better by {gain:+.4f} >= margin {margin}"}
    return {"decision": "kept", "promote": False,
            "reason": f"{figures}: {gain:+.4f} is below the margin {margin}"}
