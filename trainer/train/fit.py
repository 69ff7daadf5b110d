"""Fitting one head: its loss, the stock Keras callbacks, and the fit itself.

Shared by plain `tv-train` and every trial of the head search (trainer.train.tune), so a trial
trains exactly as a plain run does.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Optional

import keras

from trainer.train.config import TrainConfig
from trainer.train.data.dataset import (
    TRAIN,
    VALIDATION,
    TrainingData,
    dataset,
    feature_moments,
)
from trainer.train.data.split_cache import SplitCache
from trainer.train.data.transform import TransferValueTransform
from trainer.train.heads import build_model

CHECKPOINT = os.path.join("checkpoints", "best.weights.h5")
HEAD_FILE = "head.keras"  # the fitted head alone, so tv-retrain can re-score a champion
LOGS_DIR = "logs"
TRAINING_LOG = "training_log.csv"
MONITOR = "val_accuracy"

def loss(config: TrainConfig, num_classes: int):
    """Sparse cross-entropy; with label smoothing, the dense form on one-hot labels (Keras's
    sparse loss has no smoothing option)."""
    if config.label_smoothing == 0:
        return keras.losses.SparseCategoricalCrossentropy()
    smoothed = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)

    def smoothed_sparse_crossentropy(label_ids, probabilities):
        label_ids = keras.ops.reshape(keras.ops.cast(label_ids, "int32"), (-1,))
        return smoothed(keras.ops.one_hot(label_ids, num_classes), probabilities)

    return smoothed_sparse_crossentropy


def callbacks(config: TrainConfig, model_dir: str) -> list[keras.callbacks.Callback]:
    """Best-epoch restore, best checkpoint and logs: each one stock Keras callback."""
    chosen = [
        keras.callbacks.EarlyStopping(monitor=MONITOR, mode="max", patience=config.patience,
                                      restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(os.path.join(model_dir, CHECKPOINT), monitor=MONITOR,
                                        mode="max", save_best_only=True, save_weights_only=True),
        keras.callbacks.CSVLogger(os.path.join(model_dir, TRAINING_LOG)),
    ]
    # TensorFlow no longer pulls in TensorBoard; without it the callback fails mid-fit.
    if importlib.util.find_spec("tensorboard") is not None:
        chosen.append(keras.callbacks.TensorBoard(os.path.join(model_dir, LOGS_DIR)))
    else:
        logging.warning("tensorboard is not installed: no TensorBoard logs in %s", model_dir)
    return chosen


def compiled_head(config: TrainConfig, training_data: TrainingData,
                  moments: tuple) -> keras.Model:
    """The configured head, compiled; one definition for plain training and every search trial
    (`moments`: the train split's mean and variance, or (None, None) behind a TFT graph)."""
    model = build_model(config, training_data.feature_dim, training_data.num_classes, *moments)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss=loss(config, training_data.num_classes),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return model


def fit(config: TrainConfig, training_data: TrainingData, model_dir: str, verbose: int = 0,
        transform: Optional[TransferValueTransform] = None,
        cache: Optional[SplitCache] = None) -> tuple[keras.Model, dict]:
    """Build the configured head and fit it; returns the best-epoch model and its history.

    With a `transform` the input pipeline z-scores the values (TFT); without one the head
    gets a Normalization layer fitted on the train split.  With a `cache` (a SplitCache, built
    once for many fits) the data comes from memory and its own transform, not the shards.
    """
    if cache is not None:
        transform = cache.transform
        moments = (None, None) if transform is not None else cache.feature_moments(config)
        train_ds, validation_ds = cache.training(config), cache.evaluation(VALIDATION, config)
    else:
        moments = ((None, None) if transform is not None
                   else feature_moments(training_data, config))
        train_ds = dataset(training_data, TRAIN, config, training=True, transform=transform)
        validation_ds = dataset(training_data, VALIDATION, config, transform=transform)
    model = compiled_head(config, training_data, moments)
    os.makedirs(os.path.join(model_dir, os.path.dirname(CHECKPOINT)), exist_ok=True)
    weights = training_data.class_weights() if config.class_weights == "balanced" else None
    history = model.fit(train_ds, validation_data=validation_ds,
                        epochs=config.epochs, callbacks=callbacks(config, model_dir),
                        class_weight=weights,
                        shuffle=False,  # the input pipeline shuffles, seeded; Keras cannot
                        verbose=verbose)
    return model, history.history
