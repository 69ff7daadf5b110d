"""Out-of-fold class probabilities: our own head, trained once per fold, predicts the fold it
never saw, so every example gets probabilities from a model its label did not teach.

Folds come from a stable hash of the image_id (not the row order), so the same collection gives
the same folds on every machine and a new run does not reshuffle the old images.  The head is
the trainer's softmax head (trainer.train.heads) fitted on z-scored transfer values for a fixed
number of epochs: on frozen features it is a regularised multinomial logistic regression and
costs seconds per fold.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from beam_jobs.cli.errors import UserError

_MIN_STEPS_PER_EPOCH = 8


@dataclasses.dataclass(frozen=True)
class FoldConfig:
    """How the per-fold heads are fitted (defaults measured on Fashion-MNIST, BENCHMARKS.md)."""

    folds: int = 5
    epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 1e-3
    l2: float = 1e-3
    seed: int = 0


def fold_of(image_ids: np.ndarray, folds: int) -> np.ndarray:
    """Fold index per image: SHA-256 of the image_id, so it never depends on the row order."""
    return np.asarray([int(hashlib.sha256(str(i).encode()).hexdigest()[:12], 16) % folds
                       for i in image_ids], np.int64)


def check_folds(label_ids: np.ndarray, assignment: np.ndarray, folds: int) -> None:
    if folds < 2:
        raise UserError(f"--folds must be at least 2, got {folds}.")
    if len(label_ids) < folds or len(np.unique(assignment)) < folds:
        raise UserError(f"The collection has {len(label_ids)} examples, too few for {folds} "
                        f"folds; extract more images or lower --folds.")


def _fit_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                 num_classes: int, config: FoldConfig) -> np.ndarray:
    import keras

    from trainer.train.config import TrainConfig
    from trainer.train.heads import build_model

    keras.utils.set_random_seed(config.seed)
    head = TrainConfig(head="softmax", l2=config.l2, learning_rate=config.learning_rate,
                       seed=config.seed)
    model = build_model(head, train_x.shape[1], num_classes, train_x.mean(axis=0),
                        train_x.var(axis=0) + 1e-6)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy())
    # at least _MIN_STEPS_PER_EPOCH steps, so a small collection is not left underfitted
    batch_size = max(1, min(config.batch_size, -(-len(train_x) // _MIN_STEPS_PER_EPOCH)))
    model.fit(train_x, train_y, batch_size=batch_size, epochs=config.epochs,
              shuffle=True, verbose=0)
    # one direct call, not predict(): no per-fold retracing, and a fold fits in memory
    return np.asarray(model(test_x, training=False), np.float64)


def out_of_fold_probabilities(transfer_values: np.ndarray, label_ids: np.ndarray,
                              image_ids: np.ndarray, num_classes: int,
                              config: FoldConfig = FoldConfig()) -> np.ndarray:
    """float64 [N, C]: row i predicted by the head trained on every fold but i's."""
    assignment = fold_of(image_ids, config.folds)
    check_folds(label_ids, assignment, config.folds)
    probabilities = np.zeros((len(label_ids), num_classes), np.float64)
    for fold in range(config.folds):
        held_out = assignment == fold
        probabilities[held_out] = _fit_predict(
            transfer_values[~held_out], label_ids[~held_out], transfer_values[held_out],
            num_classes, config)
    return probabilities
