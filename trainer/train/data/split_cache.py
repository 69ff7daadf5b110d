"""The training data's splits read once and kept in memory, for many fits (the head search).

`trainer.train.data.dataset.dataset` streams the shards again for every dataset it builds (its tf.data
cache lives and dies with that dataset), so N trials of a search would read and parse every
shard N times.  A SplitCache reads each split once, through the very reader and parser
`dataset` uses (same order, same transform), into numpy arrays, and builds every dataset it
hands out from those arrays, sampled and shuffled the way `dataset` does: a fit from the cache
sees what a fit from the shards sees, for the same seed.  Train keeps all its views (one is
drawn per image per epoch); validation and test keep view 0, the one that is evaluated.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

from schemas import record
from trainer.train.config import TrainConfig
from trainer.train.data.dataset import (
    PARSE_BATCH,
    TRAIN,
    TrainingData,
    merged_moments,
    parsed_rows,
)
from trainer.train.data.transform import TransferValueTransform
from trainer.train.data.views import N_VIEWS, has_views, one_view_per_image

_TRAIN_KEYS = (record.TRANSFER_VALUES, record.LABEL_ID, record.IMAGE_ID, record.VIEW, N_VIEWS)
_EVALUATION_KEYS = (record.TRANSFER_VALUES, record.LABEL_ID, record.URI)


def _read_split(training_data: TrainingData, split: str, config: TrainConfig,
                transform: Optional[TransferValueTransform]) -> dict[str, np.ndarray]:
    """One pass over a split's shards → column arrays in file order (all views of train,
    view 0 of the others)."""
    rows = parsed_rows(training_data, split, config, True, transform, with_views=True)
    columns: dict[str, list[np.ndarray]] = {}
    for batch in rows.batch(PARSE_BATCH).as_numpy_iterator():
        for key, values in batch.items():
            columns.setdefault(key, []).append(values)
    arrays = {key: np.concatenate(parts) for key, parts in columns.items()}
    keys = _TRAIN_KEYS if split == TRAIN else _EVALUATION_KEYS
    if split != TRAIN:
        original = arrays[record.VIEW] == record.ORIGINAL_VIEW
        arrays = {key: values[original] for key, values in arrays.items()}
    return {key: arrays[key] for key in keys}


class SplitCache:
    """Every split parsed once; `training` and `evaluation` never read a shard again."""

    def __init__(self, training_data: TrainingData, config: TrainConfig,
                 transform: Optional[TransferValueTransform] = None) -> None:
        self.training_data = training_data
        self.transform = transform  # what the cached values went through already
        self._splits = {split: _read_split(training_data, split, config, transform)
                        for split in record.SPLITS}

    def _images(self, split: str) -> int:
        return sum(self.training_data.counts(split).values())

    def training(self, config: TrainConfig) -> tf.data.Dataset:
        """(transfer_values, label_id) batches: one view per image per epoch, shuffled with
        `config.seed`, as `trainer.train.data.dataset.dataset(..., training=True)` gives them."""
        rows = tf.data.Dataset.from_tensor_slices(self._splits[TRAIN])
        if has_views(self.training_data.runs, TRAIN):
            rows = one_view_per_image(rows, config.seed, self.training_data.missing_views)
        rows = rows.map(lambda row: (row[record.TRANSFER_VALUES], row[record.LABEL_ID])).apply(
            tf.data.experimental.assert_cardinality(self._images(TRAIN)))
        rows = rows.shuffle(config.shuffle_buffer, seed=config.seed,
                            reshuffle_each_iteration=True)
        return rows.batch(config.batch_size).prefetch(tf.data.AUTOTUNE)

    def evaluation(self, split: str, config: TrainConfig, *,
                   with_uri: bool = False) -> tf.data.Dataset:
        """(transfer_values, label_id[, uri]) batches of view 0, in file order."""
        arrays = self._splits[split] if split != TRAIN else self._original_train()
        keys = _EVALUATION_KEYS if with_uri else _EVALUATION_KEYS[:2]
        if with_uri and record.URI not in arrays:
            raise ValueError("the train split is cached without uris")
        rows = tf.data.Dataset.from_tensor_slices(tuple(arrays[key] for key in keys))
        return rows.batch(config.batch_size).prefetch(tf.data.AUTOTUNE)

    def _original_train(self) -> dict[str, np.ndarray]:
        train = self._splits[TRAIN]
        original = train[record.VIEW] == record.ORIGINAL_VIEW
        return {key: values[original] for key, values in train.items()}

    def feature_moments(self, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
        """Train-split (view 0) mean and variance, merged in `config.batch_size` batches like
        `trainer.train.data.dataset.feature_moments`, so both give the same Normalization layer."""
        features = self._original_train()[record.TRANSFER_VALUES]
        batches = (features[i:i + config.batch_size]
                   for i in range(0, len(features), config.batch_size))
        return merged_moments(batches, self.training_data.feature_dim)
