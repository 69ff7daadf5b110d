"""Classification heads on transfer values, each built by one function from the config.

Heads take z-scored transfer values.  When the runs carry a tensorflow-transform graph, the
input pipeline and the serving model apply it (trainer.train.data.transform) and the head has no
normalisation of its own; for runs without one, the head starts with a `Normalization` layer
holding the train split's mean and variance, so the z-score still travels inside the model.  Training code receives a `keras.Model` and never asks which head it is.
"""

from __future__ import annotations

from typing import Optional

import keras
import numpy as np

from schemas import record
from trainer.train.config import TrainConfig


def build_model(config: TrainConfig, feature_dim: int, num_classes: int,
                train_mean: Optional[np.ndarray] = None,
                train_variance: Optional[np.ndarray] = None) -> keras.Model:
    """transfer_values float32[N, D] → class probabilities float32[N, C] (uncompiled).

    Without moments the inputs must already be z-scored (the TFT transform did it).
    """
    regularizer = keras.regularizers.L2(config.l2) if config.l2 > 0 else None
    inputs = keras.Input(shape=(feature_dim,), dtype="float32", name=record.TRANSFER_VALUES)
    x = inputs
    if train_mean is not None:
        x = keras.layers.Normalization(mean=np.asarray(train_mean, np.float32),
                                       variance=np.asarray(train_variance, np.float32),
                                       name="zscore")(inputs)
    if config.head == "hidden":
        for depth in range(config.hidden_layers):
            suffix = f"_{depth + 1}" if depth else ""  # the first layer keeps its old name
            x = keras.layers.Dense(config.hidden_units, activation="relu",
                                   kernel_regularizer=regularizer, name="hidden" + suffix)(x)
            seed = None if config.seed is None else config.seed + depth
            x = keras.layers.Dropout(config.dropout, seed=seed, name="dropout" + suffix)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax",
                                 kernel_regularizer=regularizer, name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"{config.head}_head")
