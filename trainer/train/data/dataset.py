"""tf.data input from one or more committed runs: their union, with one label vocabulary.

Shards are read straight from the run folders (any filesystem TensorFlow reads, `gs://`
included), interleaved, parsed a thousand records per vectorised op, kept in memory when the
split fits (so only the first epoch pays for GZIP and protobuf), shuffled for training and
batched.  Runs with cached views give training one view per image per epoch, drawn after the
cache, and evaluation view 0 (trainer.train.data.views).  Labels are mapped by *name* through the
union vocabulary: a record's `label_id` indexes its own run's labels.txt, and two runs may
disagree on it.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from beam_jobs.cli.errors import UserError
from beam_jobs.runs.read import Run, one_backbone, resolve_runs
from schemas import record, tf_feature_spec
from trainer.train.config import PARQUET, TFRECORD, TrainConfig
from trainer.train.data.parquet import parquet_rows
from trainer.train.data.union import (
    NONE,
    Superseded,
    excluded_records,
    newest_wins,
    superseded_filter,
)
from trainer.train.data.views import (
    N_VIEWS,
    has_views,
    one_view_per_image,
    view_gaps,
    views_per_image,
)

TRAIN, VALIDATION, TEST = record.SPLITS
_MAX_CYCLE = 8  # shards read at once; fixed so the interleaved order does not depend on cores
PARSE_BATCH = 1024  # records parsed per vectorised parse_example call
_CACHE_BYTES = 2 << 30  # a split whose transfer values fit is parsed once and kept in memory


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """The committed runs a model is trained on, checked to share one backbone."""

    runs: tuple[Run, ...]
    labels: tuple[str, ...]  # sorted union of the runs' labels; a label's id is its index
    feature_dim: int
    fingerprint: str
    backbone_handle: str  # what `beam_jobs.backbones.load` takes to get the same backbone back
    superseded: Superseded = NONE  # older copies of an image_id a newer run holds (trainer.train.data.union)
    excluded: Mapping[str, int] = dataclasses.field(default_factory=dict)  # --exclude, per split
    missing_views: tuple[str, ...] = ()  # `<image_id>|<slot>` train views lost (trainer.train.data.views)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def shards(self, split: str, fmt: str = TFRECORD) -> list[str]:
        return [shard for run in self.runs for shard in run.shards(split, fmt)]

    @property
    def resize_policy(self) -> str:
        """How the runs' images were made square (manifest `options.resize.policy`)."""
        return _resize_policy(self.runs[0])

    @property
    def jpeg_factor(self) -> int:
        """How the runs decoded JPEGs (manifest `options.decode`); serving must do the same."""
        return _jpeg_factor(self.runs[0])

    def class_weights(self) -> dict[int, float]:
        """Balanced weights n / (C · n_c) over the train split's present classes."""
        counts = self.counts(TRAIN)
        total, present = sum(counts.values()), sum(1 for n in counts.values() if n > 0)
        return {i: total / (present * counts[label]) if counts[label] else 0.0
                for i, label in enumerate(self.labels)}

    def counts(self, split: str) -> dict[str, int]:
        """Examples per label in a split, summed over runs, every label listed."""
        totals = dict.fromkeys(self.labels, 0)
        for run in self.runs:
            for label, n in run.manifest["counts"].get(split, {}).items():
                totals[label] += int(n)
        return {label: n - self.superseded.count(split, label) for label, n in totals.items()}


def _resize_policy(run: Run) -> str:
    return run.manifest.get("options", {}).get("resize", {}).get("policy", "squash")


def _jpeg_factor(run: Run) -> int:
    """0 (full decode) for runs older than DCT-scaled decoding, which do not record it."""
    decode = run.manifest.get("options", {}).get("decode", {})
    return int(decode.get("jpeg_dct_scaling_factor", 0))


def open_training_data(data: str) -> TrainingData:
    """Resolve `--data` to committed runs and refuse a union a model could not be trained on."""
    runs = tuple(resolve_runs(data))
    training_data, superseded = check_runs(runs, data), newest_wins(runs)
    gaps = view_gaps(runs, set(superseded.keys))
    if gaps.orphans:  # views whose image was lost: skipped like superseded records
        superseded = dataclasses.replace(superseded, keys=superseded.keys + gaps.orphans)
    return dataclasses.replace(training_data, superseded=superseded,
                               missing_views=gaps.missing)


def exclude_images(training_data: TrainingData, identifiers: set[str],
                   data: str) -> TrainingData:
    """Leave out every record whose image_id or uri is listed (`tv-train --exclude`): they join
    the records the input pipeline skips, and the counts drop accordingly."""
    skipped, excluded = excluded_records(training_data.runs, training_data.superseded,
                                         identifiers)
    trimmed = dataclasses.replace(training_data, superseded=skipped,
                                  excluded={split: excluded.get(split, 0)
                                            for split in record.SPLITS})
    check_counts(trimmed, data)
    return trimmed


def check_runs(runs: Sequence[Run], data: str) -> TrainingData:
    """One backbone, every split non-empty, at least two classes to train on; `data` only
    names the runs in the error sentence."""
    fingerprint = one_backbone(runs, data, "train on")
    dims = sorted({run.feature_dim for run in runs})
    if len(dims) > 1:
        raise UserError(f"The runs under {data} have different feature sizes {dims}; "
                        f"train on runs of one backbone only.")
    policies = sorted({_resize_policy(run) for run in runs})
    if len(policies) > 1:
        raise UserError(f"The runs under {data} resized images differently ({', '.join(policies)})"
                        f"; train on runs of one resize policy only.")
    factors = sorted({_jpeg_factor(run) for run in runs})
    if len(factors) > 1:
        raise UserError(f"The runs under {data} decoded JPEGs at different DCT scaling factors "
                        f"{factors}; serving can match only one, so train on runs of one "
                        f"version, or extract the older images again into a new --output.")
    labels = tuple(sorted({label for run in runs for label in run.labels}))
    backbone = runs[0].manifest["backbone"]
    training_data = TrainingData(tuple(runs), labels, dims[0], fingerprint,
                                 backbone.get("handle") or backbone["name"])
    check_counts(training_data, data)
    return training_data


def check_counts(training_data: TrainingData, data: str) -> None:
    """Every split non-empty and at least two classes in train."""
    for split in record.SPLITS:
        if sum(training_data.counts(split).values()) == 0 or not training_data.shards(split):
            raise UserError(f"The {split} split under {data} is empty; extract more images "
                            f"or change the split percentages.")
    present = [label for label, n in training_data.counts(TRAIN).items() if n > 0]
    if len(present) < 2:
        raise UserError(f"The train split under {data} has {len(present)} class(es); a "
                        f"classifier needs at least 2.")


def label_table(labels: Sequence[str]) -> tf.lookup.StaticHashTable:
    """Label name → id in the union vocabulary; -1 for a name no manifest listed."""
    initializer = tf.lookup.KeyValueTensorInitializer(
        tf.constant(list(labels), tf.string), tf.range(len(labels), dtype=tf.int64))
    return tf.lookup.StaticHashTable(initializer, default_value=-1)


def _shards(training_data: TrainingData, split: str, fmt: str) -> tuple[list[str], list[int]]:
    """A split's shards, and for each the number of views its run holds per image."""
    pairs = [(shard, views_per_image(run, split)) for run in training_data.runs
             for shard in run.shards(split, fmt)]
    return [shard for shard, _ in pairs], [n for _, n in pairs]


def _records(files: Sequence[str], n_views: Optional[Sequence[int]], count: Optional[int],
             config: TrainConfig, feature_dim: int, drop_superseded=None) -> tf.data.Dataset:
    """The records of the given shards, interleaved (serialized Examples, or Parquet row
    dicts), each paired with its image's number of views when `n_views` is given; `count` is
    the manifests' total (None when views make records outnumber images).

    Declaring the count lets Keras know the epoch length up front (no "ran out of data"
    guess on the first epoch) and fails loudly if the shards disagree with their manifests.
    """
    deterministic = config.seed is not None
    files_ds = tf.data.Dataset.from_tensor_slices(
        list(files) if n_views is None else (list(files), list(n_views)))

    def reader(path, views=None):
        if config.input_format == PARQUET:
            records = parquet_rows(path, feature_dim)
            return records if views is None else records.map(lambda row: {**row, N_VIEWS: views})
        records = tf.data.TFRecordDataset(path, compression_type="GZIP")
        records = drop_superseded(records, path) if drop_superseded else records
        return records if views is None else records.map(lambda serialized: (serialized, views))

    records = files_ds.interleave(
        reader, cycle_length=min(len(files), _MAX_CYCLE), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic)
    return records if count is None else records.apply(
        tf.data.experimental.assert_cardinality(count))


def _parser(training_data: TrainingData, with_uri: bool, transform=None, with_views=False):
    """A batch of records → (transfer_values, label_id[, uri]), the values transformed by the
    run's tensorflow-transform graph when there is one (see trainer.train.data.transform); `with_views`:
    a dict of those and image_id, view and n_views instead, for picking views."""
    spec = tf_feature_spec(training_data.feature_dim)
    keys = ((record.TRANSFER_VALUES, record.LABEL) + ((record.URI,) if with_uri else ())
            + ((record.IMAGE_ID, record.VIEW) if with_views else ()))
    table = label_table(training_data.labels)

    def parse(batch, n_views=None):
        if isinstance(batch, dict):  # Parquet rows arrive already parsed
            parsed = batch
        else:
            parsed = tf.io.parse_example(batch, {key: spec[key] for key in keys})
        label_id = table.lookup(parsed[record.LABEL])
        with tf.control_dependencies([tf.debugging.assert_non_negative(
                label_id, message="a record's label is missing from its run's manifest")]):
            label_id = tf.identity(label_id)
        features = parsed[record.TRANSFER_VALUES]
        if transform is not None:
            features = transform(features)
        if with_views:
            return {**{key: parsed[key] for key in keys if key != record.LABEL},
                    record.TRANSFER_VALUES: features, record.LABEL_ID: label_id,
                    N_VIEWS: parsed[N_VIEWS] if n_views is None else n_views}
        if with_uri:
            return features, label_id, parsed[record.URI]
        return features, label_id

    return parse


def parsed_rows(training_data: TrainingData, split: str, config: TrainConfig, with_uri: bool,
                transform, with_views: bool) -> tf.data.Dataset:
    """Parsed rows of a split, in file order: tuples, or with views the dicts of `_parser`."""
    count = sum(training_data.counts(split).values())
    shards, n_views = _shards(training_data, split, config.input_format)
    records = _records(shards, n_views if with_views else None, None if with_views else count,
                       config, training_data.feature_dim,
                       superseded_filter(training_data.superseded, config.input_format))
    rows = (records.batch(PARSE_BATCH)
            .map(_parser(training_data, with_uri, transform, with_views),
                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=config.seed is not None)
            .unbatch())
    return rows if with_views else rows.apply(tf.data.experimental.assert_cardinality(count))


def _as_tuple(with_uri: bool, tta: bool = False):
    keys = ((record.TRANSFER_VALUES, record.LABEL_ID) + ((record.URI,) if with_uri else ())
            + ((record.IMAGE_ID, record.VIEW) if tta else ()))
    return lambda row: tuple(row[key] for key in keys)


def _parsed(training_data: TrainingData, split: str, config: TrainConfig, training: bool,
            with_uri: bool, transform, views: Sequence[int] = (record.ORIGINAL_VIEW,)
            ) -> tf.data.Dataset:
    """Training: one view per image per epoch, shuffled; otherwise the `views` of each image
    in file order.  Either way the split is cached when it fits, views and all."""
    count = sum(training_data.counts(split).values())
    with_views = has_views(training_data.runs, split)
    rows = parsed_rows(training_data, split, config, with_uri, transform, with_views)
    cached = count
    if with_views and training:
        cached = sum(run.count(split) * views_per_image(run, split) for run in training_data.runs)
    elif with_views:  # keep only the views evaluated, before the cache
        wanted = tf.constant(list(views), tf.int64)
        rows = rows.filter(lambda row: tf.reduce_any(tf.equal(row[record.VIEW], wanted)))
        cached = count * len(views)
    if cached * training_data.feature_dim * 4 <= _CACHE_BYTES:
        rows = rows.cache()  # parsed once: later epochs read memory, not GZIP + protobuf
    if with_views:
        if training:
            rows = one_view_per_image(rows, config.seed, training_data.missing_views)
        rows = rows.map(_as_tuple(with_uri, tta=len(views) > 1))
        if len(views) == 1:  # a lost mirror leaves TTA's count open
            rows = rows.apply(tf.data.experimental.assert_cardinality(count))
    if training:
        rows = rows.shuffle(config.shuffle_buffer, seed=config.seed,
                            reshuffle_each_iteration=True)
    return rows.batch(config.batch_size).prefetch(tf.data.AUTOTUNE)


def dataset(training_data: TrainingData, split: str, config: TrainConfig, *,
            training: bool = False, transform=None) -> tf.data.Dataset:
    """(transfer_values float32[B, D], label_id int64[B]) batches of one split, for Keras.

    `training=True` shuffles (seeded by `config.seed`, reshuffled every epoch) and presents
    one view of each image per epoch (trainer.train.data.views); otherwise only view 0 is read.
    `transform` (a `trainer.train.data.transform.TransferValueTransform`) is applied when given.
    """
    return _parsed(training_data, split, config, training, False, transform)


def evaluation_dataset(training_data: TrainingData, split: str, config: TrainConfig,
                       transform=None, *, tta: bool = False) -> tf.data.Dataset:
    """(transfer_values, label_id, uri) batches of view 0 in file order, so mistakes can be
    reported; `tta=True`: views 0 and -1, as (transfer_values, label_id, uri, image_id, view)."""
    views = (record.ORIGINAL_VIEW, record.MIRROR_VIEW) if tta else (record.ORIGINAL_VIEW,)
    return _parsed(training_data, split, config, False, True, transform, views)


def feature_moments(training_data: TrainingData,
                    config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and variance of the train split (view 0), streamed once."""
    batches = (features for features, _ in dataset(training_data, TRAIN, config)
               .as_numpy_iterator())
    return merged_moments(batches, training_data.feature_dim)


def merged_moments(batches: Iterable[np.ndarray],
                   feature_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance over batches, merged with Chan et al.'s update, which stays accurate
    in float64 even where a feature's mean is large against its spread (a plain sum of squares
    would cancel)."""
    count, mean = 0, np.zeros(feature_dim, np.float64)
    sum_sq_dev = np.zeros(feature_dim, np.float64)
    for features in batches:
        batch = features.astype(np.float64)
        n, batch_mean = batch.shape[0], batch.mean(axis=0)
        delta = batch_mean - mean
        total = count + n
        mean = mean + delta * (n / total)
        sum_sq_dev += (np.square(batch - batch_mean).sum(axis=0)
                       + np.square(delta) * (count * n / total))
        count = total
    return mean.astype(np.float32), (sum_sq_dev / count).astype(np.float32)

