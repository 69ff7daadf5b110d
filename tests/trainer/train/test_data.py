"""trainer.train.data.dataset: the union of committed runs, and the runs it refuses to train on."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from beam_jobs.cli.errors import UserError
from tests.helpers import fake_runs as fx
from trainer.train.config import TrainConfig
from trainer.train.data.dataset import (
    dataset,
    evaluation_dataset,
    feature_moments,
    open_training_data,
)

CONFIG = TrainConfig(batch_size=16, seed=7)


def _rows(training_data, split):
    rows = []
    for features, label_ids, uris in evaluation_dataset(training_data, split, CONFIG):
        for vector, label_id, uri in zip(features.numpy(), label_ids.numpy(), uris.numpy()):
            rows.append((uri.decode(), training_data.labels[label_id], vector))
    return rows


def test_union_of_two_runs_gives_all_rows_with_union_vocabulary(tmp_path):
    fx.write_run(str(tmp_path), "run-a", classes=("cat", "dog", "fish"), seed=1)
    fx.write_run(str(tmp_path), "run-b", classes=("bird", "cat", "dog", "fish"), seed=2,
                 per_class={"train": 10, "validation": 3, "test": 2})
    training_data = open_training_data(str(tmp_path))

    assert training_data.labels == ("bird", "cat", "dog", "fish")
    for split, expected in (("train", 3 * 40 + 4 * 10), ("validation", 3 * 15 + 4 * 3),
                            ("test", 3 * 15 + 4 * 2)):
        rows = _rows(training_data, split)
        assert len(rows) == expected == sum(training_data.counts(split).values())
        assert len({uri for uri, _, _ in rows}) == expected
        # run-b's label_id for "cat" is 1, run-a's is 0: ids must come from the names
        assert all(f"/{label}/" in uri for uri, label, _ in rows)


def test_runs_of_different_backbones_are_refused(tmp_path):
    fx.write_run(str(tmp_path), "run-a", fingerprint="one@1/16px/8d")
    fx.write_run(str(tmp_path), "run-b", fingerprint="two@1/16px/8d")
    with pytest.raises(UserError, match="different backbones"):
        open_training_data(str(tmp_path))


def test_runs_of_different_feature_sizes_are_refused(tmp_path):
    fx.write_run(str(tmp_path), "run-a", feature_dim=8)
    fx.write_run(str(tmp_path), "run-b", feature_dim=4)
    with pytest.raises(UserError, match="different feature sizes"):
        open_training_data(str(tmp_path))


def test_uncommitted_run_is_ignored_beside_committed_ones(tmp_path):
    fx.write_run(str(tmp_path), "run-a")
    fx.write_run(str(tmp_path), "run-b", committed=False, classes=("bird", "cat"))
    training_data = open_training_data(str(tmp_path))
    assert [run.run_id for run in training_data.runs] == ["run-a"]
    assert "bird" not in training_data.labels


def test_uncommitted_run_named_directly_is_refused(tmp_path):
    run_dir = fx.write_run(str(tmp_path), "run-a", committed=False)
    with pytest.raises(UserError, match="not a committed run"):
        open_training_data(run_dir)


def test_single_class_is_refused(tmp_path):
    fx.write_run(str(tmp_path), "run-a", classes=("cat",))
    with pytest.raises(UserError, match="at least 2"):
        open_training_data(str(tmp_path))


def test_empty_validation_split_is_refused(tmp_path):
    fx.write_run(str(tmp_path), "run-a", per_class={"train": 10, "validation": 0, "test": 5})
    with pytest.raises(UserError, match="validation split .* is empty"):
        open_training_data(str(tmp_path))


def test_feature_moments_equal_numpy_over_the_train_split(tmp_path):
    fx.write_run(str(tmp_path), "run-a")
    training_data = open_training_data(str(tmp_path))
    vectors = np.stack([vector for _, _, vector in _rows(training_data, "train")])
    mean, variance = feature_moments(training_data, CONFIG)
    np.testing.assert_allclose(mean, vectors.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(variance, vectors.var(axis=0), rtol=1e-5, atol=1e-5)


def test_seeded_training_order_is_shuffled_and_repeatable(tmp_path):
    fx.write_run(str(tmp_path), "run-a")
    training_data = open_training_data(str(tmp_path))

    def order():
        return np.concatenate([labels for _, labels in
                               dataset(training_data, "train", CONFIG, training=True)
                               .as_numpy_iterator()])

    first, second = order(), order()
    unshuffled = np.concatenate([labels for _, labels in
                                 dataset(training_data, "train", CONFIG).as_numpy_iterator()])
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, unshuffled)
    assert sorted(first) == sorted(unshuffled)


def _batches(training_data, config, split="train", training=False):
    return [(values, labels) for values, labels in
            dataset(training_data, split, config, training=training).as_numpy_iterator()]


def test_parquet_input_yields_the_same_batches_as_tfrecord(tmp_path):
    fx.write_run(str(tmp_path), "run-a", seed=1)
    fx.write_run(str(tmp_path), "run-b", classes=("bird", "cat"), seed=2,
                 per_class={"train": 7, "validation": 3, "test": 2})
    training_data = open_training_data(str(tmp_path))
    for training in (False, True):
        tfrecord = _batches(training_data, CONFIG, training=training)
        parquet = _batches(training_data, dataclasses.replace(CONFIG, input_format="parquet"),
                           training=training)
        assert len(tfrecord) == len(parquet)
        for (values_a, labels_a), (values_b, labels_b) in zip(tfrecord, parquet):
            np.testing.assert_array_equal(labels_a, labels_b)
            np.testing.assert_array_equal(values_a, values_b)


def test_balanced_class_weights_are_inverse_to_train_counts(tmp_path):
    fx.write_run(str(tmp_path), "run-a", seed=1)  # 40 train per class
    fx.write_run(str(tmp_path), "run-b", classes=("cat", "dog"), seed=2,
                 per_class={"train": 20, "validation": 3, "test": 2})
    weights = open_training_data(str(tmp_path)).class_weights()
    # cat 60, dog 60, fish 40 of 160: n / (C * n_c)
    assert weights == pytest.approx({0: 160 / 180, 1: 160 / 180, 2: 160 / 120})


def test_unknown_schema_version_is_refused(tmp_path):
    run_dir = fx.write_run(str(tmp_path), "run-a")
    manifest_path = os.path.join(run_dir, "manifest.json")
    with open(manifest_path) as f:
        manifest = json.load(f)
    with open(manifest_path, "w") as f:
        json.dump(dict(manifest, schema_version=999), f)
    with pytest.raises(UserError, match="schema version 999"):
        open_training_data(str(tmp_path))


def test_runs_of_different_resize_policies_are_refused(tmp_path):
    for run_id, policy in (("run-a", "squash"), ("run-b", "crop")):
        run_dir = fx.write_run(str(tmp_path), run_id)
        manifest_path = os.path.join(run_dir, "manifest.json")
        with open(manifest_path) as f:
            manifest = json.load(f)
        manifest["options"] = {"resize": {"policy": policy}}
        with open(manifest_path, "w") as f:
            json.dump(manifest, f)
    with pytest.raises(UserError, match="resize"):
        open_training_data(str(tmp_path))
