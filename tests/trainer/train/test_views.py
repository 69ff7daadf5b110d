"""Cached views in the trainer: one view per image per epoch, view 0 for evaluation, union and
--exclude by image, the SplitCache that reads shards once, and test-time augmentation."""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import os
import shutil

import keras
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from beam_jobs.cli.errors import UserError
from beam_jobs.cli.launch import main
from schemas import parse_tf_example, record, to_tf_example
from tests.helpers import fake_runs as fx
from trainer.train import command as train_module
from trainer.train import evaluate
from trainer.train.config import TrainConfig
from trainer.train.data.dataset import (
    dataset,
    evaluation_dataset,
    exclude_images,
    open_training_data,
)
from trainer.train.data.split_cache import SplitCache

CONFIG = TrainConfig(batch_size=16, seed=7)
K = 2  # augmented views per train image in these runs (+ the original + the mirror = 4)
SMALL = {"train": 12, "validation": 4, "test": 4}


def _view_of(run_dirs, split):
    """transfer-value bytes → (image_id, view), from the shards themselves."""
    found = {}
    for run_dir in run_dirs:
        for shard in glob.glob(os.path.join(run_dir, f"{split}-*.tfrecord.gz")):
            for serialized in tf.data.TFRecordDataset(shard, compression_type="GZIP"):
                row = parse_tf_example(serialized.numpy())
                found[row[record.TRANSFER_VALUES].tobytes()] = (row[record.IMAGE_ID],
                                                                row[record.VIEW])
    return found


def _epochs(ds, n):
    """The rows of `n` successive iterations of one dataset, as Keras's epochs see them."""
    return [[values.tobytes() for batch, _ in ds.as_numpy_iterator() for values in batch]
            for _ in range(n)]


@pytest.fixture()
def viewed(tmp_path):
    run_dir = fx.write_run(str(tmp_path), "20240101T000000-a", per_class=SMALL,
                           augment_views=K, mirror=True)
    return str(tmp_path), run_dir


@pytest.mark.parametrize("input_format", ["tfrecord", "parquet"])
def test_each_epoch_presents_one_view_per_image_drawn_anew(viewed, input_format):
    data, run_dir = viewed
    training_data = open_training_data(data)
    config = dataclasses.replace(CONFIG, input_format=input_format)
    view_of = _view_of([run_dir], "train")
    epochs = _epochs(dataset(training_data, "train", config, training=True), 6)
    images = 3 * SMALL["train"]
    draws = []
    for rows in epochs:
        assert len(rows) == images
        assert len({view_of[row][0] for row in rows}) == images  # every image exactly once
        draws.append({view_of[row][0]: view_of[row][1] for row in rows})
    assert all(draws[i] != draws[i + 1] for i in range(len(draws) - 1))
    tally = collections.Counter(view for draw in draws for view in draw.values())
    assert set(tally) == {0, 1, 2, record.MIRROR_VIEW}  # the original and the mirror too
    assert min(tally.values()) > 0.15 * sum(tally.values())  # uniform-ish over 4 views
    again = _epochs(dataset(training_data, "train", config, training=True), 6)
    assert again == epochs  # the same seed draws the same views in the same order


def test_a_run_with_views_and_one_without_train_together(viewed):
    data, run_dir = viewed
    plain_dir = fx.write_run(data, "20240102T000000-b", per_class=SMALL, seed=5)
    training_data = open_training_data(data)
    view_of = _view_of([run_dir, plain_dir], "train")
    draws = []
    for rows in _epochs(dataset(training_data, "train", CONFIG, training=True), 3):
        ids = [view_of[row][0] for row in rows]
        assert len(ids) == len(set(ids)) == 2 * 3 * SMALL["train"]
        draws.append({view_of[row][1] for row in rows})
    assert set.union(*draws) == {0, 1, 2, record.MIRROR_VIEW}


def test_tfrecord_and_parquet_draw_the_same_views(viewed):
    training_data = open_training_data(viewed[0])
    tfrecord = _epochs(dataset(training_data, "train", CONFIG, training=True), 2)
    parquet = _epochs(dataset(training_data, "train", dataclasses.replace(
        CONFIG, input_format="parquet"), training=True), 2)
    assert tfrecord == parquet


def test_validation_test_and_moments_read_view_0_only(viewed):
    data, run_dir = viewed
    training_data = open_training_data(data)
    for split in record.SPLITS:
        view_of = _view_of([run_dir], split)
        rows = [(values.tobytes(), uri) for batch, _, uris in
                evaluation_dataset(training_data, split, CONFIG).as_numpy_iterator()
                for values, uri in zip(batch, uris)]
        assert len(rows) == sum(training_data.counts(split).values())
        assert {view_of[values][1] for values, _ in rows} == {record.ORIGINAL_VIEW}
        assert len({uri for _, uri in rows}) == len(rows)  # errors.csv: one row per image


def test_old_parquet_shards_without_a_view_column_read_as_view_0(tmp_path):
    fx.write_run(str(tmp_path), "run-a", per_class=SMALL)
    for shard in glob.glob(str(tmp_path / "runs/run-a/parquet/*.parquet")):
        table = pq.read_table(shard)
        pq.write_table(table.drop_columns([record.VIEW]), shard)
    training_data = open_training_data(str(tmp_path))
    parquet = dataclasses.replace(CONFIG, input_format="parquet")
    for split in record.SPLITS:
        got = [labels for _, labels in dataset(training_data, split, parquet).as_numpy_iterator()]
        want = [labels for _, labels in dataset(training_data, split, CONFIG).as_numpy_iterator()]
        np.testing.assert_array_equal(np.concatenate(got), np.concatenate(want))


def test_excluding_an_image_drops_all_its_views(viewed):
    data, run_dir = viewed
    training_data = open_training_data(data)
    left_out = "fake://20240101T000000-a/train/cat/3.png"
    trimmed = exclude_images(training_data, {left_out}, data)
    assert trimmed.excluded["train"] == 1
    assert sum(trimmed.counts("train").values()) == 3 * SMALL["train"] - 1
    view_of = _view_of([run_dir], "train")
    for rows in _epochs(dataset(trimmed, "train", CONFIG, training=True), 4):
        ids = [view_of[row][0] for row in rows]
        assert len(ids) == len(set(ids)) == 3 * SMALL["train"] - 1
        assert fx.hashlib.sha256(left_out.encode()).hexdigest() not in ids


def test_newest_run_supersedes_every_view_of_an_older_copy(viewed):
    data, run_dir = viewed
    newer = os.path.join(data, "runs", "20240102T000000-b")
    shutil.copytree(run_dir, newer)  # the same images extracted again
    manifest_path = os.path.join(newer, "manifest.json")
    manifest = json.load(open(manifest_path))
    manifest["run_id"] = "20240102T000000-b"
    json.dump(manifest, open(manifest_path, "w"))
    training_data = open_training_data(data)
    assert sum(training_data.counts("train").values()) == 3 * SMALL["train"]
    for rows in _epochs(dataset(training_data, "train", CONFIG, training=True), 2):
        assert len(rows) == 3 * SMALL["train"]
    validation = list(evaluation_dataset(training_data, "validation", CONFIG).unbatch())
    assert len(validation) == 3 * SMALL["validation"]


def test_split_cache_matches_the_shards_and_never_reads_them_again(viewed, tmp_path):
    data, run_dir = viewed
    training_data = open_training_data(data)
    cache = SplitCache(training_data, CONFIG)
    assert _epochs(cache.training(CONFIG), 3) == _epochs(
        dataset(training_data, "train", CONFIG, training=True), 3)
    streamed = list(evaluation_dataset(training_data, "test", CONFIG).unbatch()
                    .as_numpy_iterator())
    moments = cache.feature_moments(CONFIG)
    for shard in glob.glob(os.path.join(run_dir, "**", "*-of-*.*"), recursive=True):
        os.rename(shard, shard + ".gone")  # any read of a shard would now fail
    other = dataclasses.replace(CONFIG, seed=8, batch_size=5)
    second = _epochs(cache.training(other), 2)
    assert all(len(rows) == 3 * SMALL["train"] for rows in second)
    cached = list(cache.evaluation("test", other, with_uri=True).unbatch().as_numpy_iterator())
    assert [(v.tobytes(), label, uri) for v, label, uri in cached] == [
        (v.tobytes(), label, uri) for v, label, uri in streamed]
    assert len(list(cache.evaluation("validation", other))) == -(-3 * SMALL["validation"] // 5)
    np.testing.assert_array_equal(moments[0], cache.feature_moments(CONFIG)[0])


def test_fit_from_the_cache_equals_fit_from_the_shards(tmp_path):
    fx.write_run(str(tmp_path / "data"), "run-a", per_class=SMALL)
    training_data = open_training_data(str(tmp_path / "data"))
    config = TrainConfig(epochs=3, batch_size=16, learning_rate=0.05, seed=3)
    histories = []
    for name, cache in (("shards", None), ("cache", SplitCache(training_data, config))):
        keras.utils.set_random_seed(config.seed)
        _, history = train_module.fit(config, training_data, str(tmp_path / name), cache=cache)
        histories.append(history)
    assert histories[0] == histories[1]


def test_tta_averages_each_image_with_its_mirror(viewed):
    data, run_dir = viewed
    training_data = open_training_data(data)
    head = keras.Sequential([keras.Input((fx.FEATURE_DIM,)),
                             keras.layers.Dense(3, activation="softmax")])
    plain = evaluate.predict_split(head, training_data, "test", CONFIG)
    tta = evaluate.predict_split(head, training_data, "test", dataclasses.replace(CONFIG, tta=True))
    mirrors = {}
    for shard in glob.glob(os.path.join(run_dir, "test-*.tfrecord.gz")):
        for serialized in tf.data.TFRecordDataset(shard, compression_type="GZIP"):
            row = parse_tf_example(serialized.numpy())
            if row[record.VIEW] == record.MIRROR_VIEW:
                mirrors[row[record.URI]] = row[record.TRANSFER_VALUES]
    mirror_probabilities = head(np.stack([mirrors[uri] for uri in plain.uris])).numpy()
    assert tta.uris == plain.uris
    np.testing.assert_array_equal(tta.label_ids, plain.label_ids)
    np.testing.assert_allclose(tta.probabilities,
                               (plain.probabilities + mirror_probabilities) / 2, rtol=1e-6)
    assert plain.single_view_accuracy is None
    assert tta.single_view_accuracy == pytest.approx(plain.accuracy)


def test_tta_without_mirror_views_is_refused_with_exit_2(tmp_path, capsys):
    fx.write_run(str(tmp_path), "run-a", per_class=SMALL, augment_views=K)
    with pytest.raises(UserError, match="--mirror_views"):
        train_module.train(TrainConfig(tta=True), str(tmp_path), str(tmp_path / "m"),
                           export=False)
    code = main(train_module.run, ["--data", str(tmp_path), "--model_dir",
                                   str(tmp_path / "model"), "--tta"])
    assert code == 2 and "--mirror_views" in capsys.readouterr().err


def test_metrics_and_report_record_tta_and_views(viewed, tmp_path):
    data, _ = viewed
    config = TrainConfig(epochs=2, batch_size=16, learning_rate=0.05, seed=3, tta=True)
    metrics = train_module.train(config, data, str(tmp_path / "model"), export=False)
    assert metrics["tta"] is True
    # the same head without the mirror, for what TTA bought: view 0 alone, re-predicted here
    training_data = open_training_data(data)
    plain = evaluate.predict_split(keras.models.load_model(tmp_path / "model" / "head.keras", compile=False),
                                   training_data, "test", dataclasses.replace(config, tta=False),
                                   train_module.load_transform(training_data.runs))
    assert metrics["without_tta"]["test_accuracy"] == pytest.approx(plain.accuracy)
    assert 0 <= metrics["without_tta"]["validation_accuracy"] <= 1
    assert metrics["views"]["20240101T000000-a"]["augment_views"] == K
    assert metrics["views"]["20240101T000000-a"]["mirror"] is True
    assert metrics["counts"]["train"] == {label: SMALL["train"] for label in fx.CLASSES}
    page = open(tmp_path / "model" / "report.html").read()
    assert (f"original + {K} augmented + mirror; TTA True (test accuracy without it "
            f"{metrics['without_tta']['test_accuracy']:.4f})") in page


def _drop_records(run_dir, split, unwanted):
    """Rewrite a run's shards of `split` without the records `unwanted(row)` names, as an
    extraction that lost them would have written, and fix the manifest's counts."""
    lost = collections.Counter()
    for shard in glob.glob(os.path.join(run_dir, f"{split}-*.tfrecord.gz")):
        rows = [parse_tf_example(s.numpy())
                for s in tf.data.TFRecordDataset(shard, compression_type="GZIP")]
        with tf.io.TFRecordWriter(shard, options="GZIP") as writer:
            for row in rows:
                if unwanted(row):
                    lost[(row[record.LABEL], row[record.VIEW])] += 1
                else:
                    writer.write(to_tf_example(row))
    for shard in glob.glob(os.path.join(run_dir, "parquet", f"{split}-*.parquet")):
        table = pq.read_table(shard)
        keep = [not unwanted(row) for row in table.to_pylist()]
        pq.write_table(table.filter(pa.array(keep)), shard)
    manifest_path = os.path.join(run_dir, "manifest.json")
    manifest = json.load(open(manifest_path))
    for (label, view), n in lost.items():
        manifest["view_counts"][split][str(view)] -= n
        if view == record.ORIGINAL_VIEW:
            manifest["counts"][split][label] -= n
    json.dump(manifest, open(manifest_path, "w"))


def test_lost_views_fall_back_to_the_original_and_orphan_views_are_skipped(viewed):
    data, run_dir = viewed
    lacking = "fake://20240101T000000-a/train/cat/1.png"
    orphan = "fake://20240101T000000-a/train/dog/2.png"
    view_of = _view_of([run_dir], "train")
    _drop_records(run_dir, "train", lambda row: (row[record.URI], row[record.VIEW]) in {
        (lacking, 2), (lacking, record.MIRROR_VIEW), (orphan, record.ORIGINAL_VIEW)})
    training_data = open_training_data(data)
    images = 3 * SMALL["train"] - 1
    assert sum(training_data.counts("train").values()) == images
    lacking_id, orphan_id = (fx.hashlib.sha256(uri.encode()).hexdigest()
                             for uri in (lacking, orphan))
    shown = set()
    for rows in _epochs(dataset(training_data, "train", CONFIG, training=True), 8):
        ids = [view_of[row][0] for row in rows]
        assert len(ids) == len(set(ids)) == images and orphan_id not in ids
        shown |= {view_of[row][1] for row in rows if view_of[row][0] == lacking_id}
    assert shown == {0, 1}  # its lost views 2 and -1 were drawn, and the original came instead
    cache = SplitCache(training_data, CONFIG)
    assert all(len(rows) == images for rows in _epochs(cache.training(CONFIG), 2))


def test_tta_keeps_an_image_whose_mirror_was_lost(viewed):
    data, run_dir = viewed
    lost = "fake://20240101T000000-a/test/fish/0.png"
    _drop_records(run_dir, "test", lambda row: (row[record.URI], row[record.VIEW]) == (
        lost, record.MIRROR_VIEW))
    training_data = open_training_data(data)
    head = keras.Sequential([keras.Input((fx.FEATURE_DIM,)),
                             keras.layers.Dense(3, activation="softmax")])
    plain = evaluate.predict_split(head, training_data, "test", CONFIG)
    tta = evaluate.predict_split(head, training_data, "test", dataclasses.replace(CONFIG, tta=True))
    assert tta.uris == plain.uris and len(plain.uris) == 3 * SMALL["test"]
    i = plain.uris.index(lost)
    np.testing.assert_allclose(tta.probabilities[i], plain.probabilities[i], rtol=1e-6)


def _as_schema_v1(run_dir: str) -> None:
    """Rewrite a run the way schema version 1 wrote it: no `view` anywhere."""
    from tensorflow.core.example import example_pb2

    for shard in glob.glob(os.path.join(run_dir, "parquet", "*.parquet")):
        pq.write_table(pq.read_table(shard).drop_columns([record.VIEW]), shard)
    for shard in glob.glob(os.path.join(run_dir, "*.tfrecord.gz")):
        examples = [example_pb2.Example.FromString(raw.numpy()) for raw in
                    tf.data.TFRecordDataset(shard, compression_type="GZIP")]
        with tf.io.TFRecordWriter(shard, options="GZIP") as writer:
            for example in examples:
                del example.features.feature[record.VIEW]
                writer.write(example.SerializeToString())
    manifest_path = os.path.join(run_dir, "manifest.json")
    with open(manifest_path) as f:
        manifest = json.load(f)
    with open(manifest_path, "w") as f:
        json.dump(dict(manifest, schema_version=1), f)


@pytest.mark.slow
@pytest.mark.parametrize("input_format", ["tfrecord", "parquet"])
def test_runs_written_before_views_train_exactly_as_they_did(tmp_path, input_format):
    run_dir = fx.write_run(str(tmp_path / "data"), "run-v1", per_class=SMALL)
    config = dataclasses.replace(CONFIG, epochs=2, input_format=input_format)
    before = train_module.train(config, str(tmp_path / "data"), str(tmp_path / "m2"),
                                export=False)
    _as_schema_v1(run_dir)
    after = train_module.train(config, str(tmp_path / "data"), str(tmp_path / "m1"),
                               export=False)
    assert sum(map(sum, after["confusion_matrix"])) == SMALL["test"] * len(fx.CLASSES)
    assert after["confusion_matrix"] == before["confusion_matrix"]
    assert after["validation_accuracy"] == before["validation_accuracy"]


@pytest.mark.slow
def test_tta_changes_evaluation_only_so_its_plain_figure_is_the_plain_runs(viewed, tmp_path):
    """`--tta` trains exactly as a plain run (same seed, same draws, same weights), so the
    accuracy it reports without the mirror is what plain `tv-train` reports."""
    data, _ = viewed
    config = TrainConfig(epochs=3, batch_size=16, learning_rate=0.05, seed=3)
    plain = train_module.train(config, data, str(tmp_path / "plain"), export=False)
    tta = train_module.train(dataclasses.replace(config, tta=True), data, str(tmp_path / "tta"),
                             export=False)
    assert tta["without_tta"] == {"test_accuracy": plain["test_accuracy"],
                                  "validation_accuracy": plain["validation_accuracy"]}
    heads = [keras.models.load_model(tmp_path / name / train_module.HEAD_FILE, compile=False)
             for name in ("plain", "tta")]
    for a, b in zip(*(head.get_weights() for head in heads)):
        np.testing.assert_array_equal(a, b)
