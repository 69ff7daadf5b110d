"""tf.data input from one or more committed runs: their union, with one label vocabulary.

Shards are read straight from the run folders (any filesystem TensorFlow reads, `gs://`
included), interleaved, shuffled for training, batched and only then parsed, so parsing is one
vectorised op per batch instead of one per record.  Labels are mapped by *name* through the
union vocabulary: a record's `label_id` indexes its own run's labels.txt, and two runs may
disagree on it.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import tensorflow as tf

from beam_jobs.errors import UserError
from beam_jobs.runs import Run, resolve_runs
from schemas import record, tf_feature_spec
from trainer.config import TrainConfig

TRAIN, VALIDATION, TEST = record.SPLITS
_MAX_CYCLE = 8  # shards read at once; fixed so the interleaved order does not depend on cores


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """The committed runs a model is trained on, checked to share one backbone."""

    runs: tuple[Run, ...]
    labels: tuple[str, ...]  # sorted union of the runs' labels; a label's id is its index
    feature_dim: int
    fingerprint: str
    backbone_handle: str  # what `beam_jobs.backbones.load` takes to get the same backbone back

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def shards(self, split: str) -> list[str]:
        return [shard for run in self.runs for shard in run.shards(split)]

    def counts(self, split: str) -> dict[str, int]:
        """Examples per label in a split, summed over runs, every label listed."""
        totals = dict.fromkeys(self.labels, 0)
        for run in self.runs:
            for label, n in run.manifest["counts"].get(split, {}).items():
                totals[label] += int(n)
        return totals


def open_training_data(data: str) -> TrainingData:
    """Resolve `--data` to committed runs and refuse a union a model could not be trained on."""
    runs = tuple(resolve_runs(data))
    return check_runs(runs, data)


def check_runs(runs: Sequence[Run], data: str) -> TrainingData:
    """One backbone, every split non-empty, at least two classes to train on; `data` only
    names the runs in the error sentence."""
    fingerprints = sorted({run.fingerprint for run in runs})
    if len(fingerprints) > 1:
        raise UserError(f"The runs under {data} come from different backbones "
                        f"({', '.join(fingerprints)}); train on runs of one backbone only.")
    dims = sorted({run.feature_dim for run in runs})
    if len(dims) > 1:
        raise UserError(f"The runs under {data} have different feature sizes {dims}; "
                        f"train on runs of one backbone only.")
    labels = tuple(sorted({label for run in runs for label in run.labels}))
    backbone = runs[0].manifest["backbone"]
    training_data = TrainingData(tuple(runs), labels, dims[0], fingerprints[0],
                                 backbone.get("handle") or backbone["name"])
    for split in record.SPLITS:
        if sum(training_data.counts(split).values()) == 0 or not training_data.shards(split):
            raise UserError(f"The {split} split under {data} is empty; extract more images "
                            f"or change the split percentages.")
    present = [label for label, n in training_data.counts(TRAIN).items() if n > 0]
    if len(present) < 2:
        raise UserError(f"The train split under {data} has {len(present)} class(es); a "
                        f"classifier needs at least 2.")
    return training_data


def label_table(labels: Sequence[str]) -> tf.lookup.StaticHashTable:
    """Label name → id in the union vocabulary; -1 for a name no manifest listed."""
    initializer = tf.lookup.KeyValueTensorInitializer(
        tf.constant(list(labels), tf.string), tf.range(len(labels), dtype=tf.int64))
    return tf.lookup.StaticHashTable(initializer, default_value=-1)


def _serialized_batches(files: Sequence[str], count: int, config: TrainConfig,
                        training: bool) -> tf.data.Dataset:
    """Serialized Examples of the given shards, batched; `count` is the manifests' total.

    Declaring the count lets Keras know the epoch length up front (no "ran out of data"
    guess on the first epoch) and fails loudly if the shards disagree with their manifests.
    """
    deterministic = config.seed is not None
    files_ds = tf.data.Dataset.from_tensor_slices(list(files))
    records = files_ds.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type="GZIP"),
        cycle_length=min(len(files), _MAX_CYCLE), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic).apply(tf.data.experimental.assert_cardinality(count))
    if training:
        records = records.shuffle(config.shuffle_buffer, seed=config.seed,
                                  reshuffle_each_iteration=True)
    return records.batch(config.batch_size)


def _parser(training_data: TrainingData, with_uri: bool):
    """A batch of serialized Examples → (transfer_values, label_id[, uri])."""
    spec = tf_feature_spec(training_data.feature_dim)
    keys = (record.TRANSFER_VALUES, record.LABEL) + ((record.URI,) if with_uri else ())
    table = label_table(training_data.labels)

    def parse(serialized: tf.Tensor):
        parsed = tf.io.parse_example(serialized, {key: spec[key] for key in keys})
        label_id = table.lookup(parsed[record.LABEL])
        with tf.control_dependencies([tf.debugging.assert_non_negative(
                label_id, message="a record's label is missing from its run's manifest")]):
            label_id = tf.identity(label_id)
        if with_uri:
            return parsed[record.TRANSFER_VALUES], label_id, parsed[record.URI]
        return parsed[record.TRANSFER_VALUES], label_id

    return parse


def _parsed(training_data: TrainingData, split: str, config: TrainConfig, training: bool,
            with_uri: bool) -> tf.data.Dataset:
    count = sum(training_data.counts(split).values())
    batches = _serialized_batches(training_data.shards(split), count, config, training)
    return batches.map(_parser(training_data, with_uri), num_parallel_calls=tf.data.AUTOTUNE,
                       deterministic=config.seed is not None).prefetch(tf.data.AUTOTUNE)


def dataset(training_data: TrainingData, split: str, config: TrainConfig, *,
            training: bool = False) -> tf.data.Dataset:
    """(transfer_values float32[B, D], label_id int64[B]) batches of one split, for Keras.

    `training=True` shuffles (seeded by `config.seed`, reshuffled every epoch).
    """
    return _parsed(training_data, split, config, training, with_uri=False)


def evaluation_dataset(training_data: TrainingData, split: str,
                       config: TrainConfig) -> tf.data.Dataset:
    """(transfer_values, label_id, uri) batches in file order, so mistakes can be reported."""
    return _parsed(training_data, split, config, training=False, with_uri=True)


def feature_moments(training_data: TrainingData,
                    config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and variance of the train split, streamed once.

    Batch moments are merged with Chan et al.'s update, which stays accurate in float64 even
    where a feature's mean is large against its spread (a plain sum of squares would cancel).
    """
    count, mean = 0, np.zeros(training_data.feature_dim, np.float64)
    sum_sq_dev = np.zeros(training_data.feature_dim, np.float64)
    for features, _ in dataset(training_data, TRAIN, config).as_numpy_iterator():
        batch = features.astype(np.float64)
        n, batch_mean = batch.shape[0], batch.mean(axis=0)
        delta = batch_mean - mean
        total = count + n
        mean = mean + delta * (n / total)
        sum_sq_dev += (np.square(batch - batch_mean).sum(axis=0)
                       + np.square(delta) * (count * n / total))
        count = total
    return mean.astype(np.float32), (sum_sq_dev / count).astype(np.float32)
