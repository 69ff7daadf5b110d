"""The run's tensorflow-transform analysis, and that training and serving apply the same graph.

One extract job over a tiny folder (the `tiny_backbone` fixture), one training with export:
every test below reads those outputs.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from PIL import Image

from beam_jobs.extract import pipeline as extract
from beam_jobs.extract.stages.tft import LABEL_VOCABULARY
from beam_jobs.runs import read as runs
from schemas import record
from tests.helpers import images as make_data
from trainer.serve.export import FEATURES_SIGNATURE, OUTPUT_HEAD_INPUT, OUTPUT_TRANSFER_VALUES
from trainer.train.command import train
from trainer.train.config import TrainConfig
from trainer.train.data.dataset import TRAIN, evaluation_dataset, open_training_data
from trainer.train.data.transform import load_transform

FAST = dict(epochs=6, patience=3, batch_size=16, learning_rate=0.05, seed=3)
CLASSES = ("cat", "dog", "owl")


def _add_other_formats(root: str) -> None:
    """Besides the PNGs: a JPEG, a GIF, a BMP, a half-transparent PNG and an EXIF-rotated
    photo-sized JPEG per class."""
    for index, label in enumerate(CLASSES):
        pixels = np.repeat(make_data.class_image(index, 99, size=20), 3, axis=-1)
        for fmt in ("JPEG", "GIF", "BMP"):
            with open(os.path.join(root, label, f"extra.{fmt.lower()}"), "wb") as f:
                f.write(make_data.png_bytes(pixels, fmt))
        rgba = np.concatenate([pixels, np.full(pixels.shape[:2] + (1,), 128, np.uint8)], -1)
        Image.fromarray(rgba, "RGBA").save(os.path.join(root, label, "alpha.png"))
        # A phone photo stored sideways (EXIF orientation 6), big enough for a DCT-scaled decode.
        with open(os.path.join(root, label, "rotated.jpg"), "wb") as f:
            f.write(make_data.photo_jpeg(640, 480, ("chelsea", "coffee", "astronaut")[index],
                                         orientation=6 + index))


@pytest.fixture(scope="module")
def extracted(tiny_backbone, tmp_path_factory) -> runs.Run:
    root = str(tmp_path_factory.mktemp("images"))
    make_data.write_folder(root, per_class=12, classes=CLASSES)
    _add_other_formats(root)
    out = str(tmp_path_factory.mktemp("out"))
    extract.run([f"--source=folder:{root}", f"--output={out}", f"--backbone={tiny_backbone}",
                 "--num_shards=2", "--splits=50,25,25"])
    [run] = runs.committed_runs(out)
    return run


@pytest.fixture(scope="module")
def trained_on_extract(extracted, tmp_path_factory) -> tuple[str, dict]:
    model_dir = str(tmp_path_factory.mktemp("model"))
    return model_dir, train(TrainConfig(**FAST), extracted.path, model_dir)


def _split_rows(run: runs.Run, split: str) -> dict[str, np.ndarray]:
    """uri → raw transfer values, as the extract job stored them."""
    rows = {}
    for shard in run.shards(split):
        for raw in tf.data.TFRecordDataset(shard, compression_type="GZIP"):
            row = __import__("schemas").parse_tf_example(raw.numpy())
            rows[row[record.URI]] = row[record.TRANSFER_VALUES]
    return rows


@pytest.mark.slow
def test_extract_writes_transform_fn_that_z_scores_the_train_split(extracted):
    assert os.path.isdir(os.path.join(extracted.path, runs.TRANSFORM_FN))
    assert os.path.isdir(os.path.join(extracted.path, "transformed_metadata"))
    output = tft.TFTransformOutput(extracted.path)
    train_values = np.stack(list(_split_rows(extracted, TRAIN).values()))
    transformed = output.transform_raw_features({
        record.LABEL: tf.constant(["cat"] * len(train_values)),
        record.TRANSFER_VALUES: tf.constant(train_values)})[record.TRANSFER_VALUES].numpy()
    np.testing.assert_allclose(transformed.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(transformed.std(axis=0), 1.0, atol=1e-3)
    expected = (train_values - train_values.mean(0)) / train_values.std(0)
    np.testing.assert_allclose(transformed, expected, atol=1e-4)


def test_label_vocabulary_holds_exactly_the_runs_labels(extracted):
    output = tft.TFTransformOutput(extracted.path)
    assert sorted(output.vocabulary_by_name(LABEL_VOCABULARY)) == [c.encode() for c in CLASSES]
    assert extracted.labels == list(CLASSES)


@pytest.mark.slow
def test_training_uses_the_runs_transform_instead_of_its_own_normalisation(trained_on_extract, extracted):
    model_dir, metrics = trained_on_extract
    assert "tensorflow-transform" in metrics["normalisation"]
    assert extracted.path in metrics["normalisation"]
    assert load_transform(open_training_data(extracted.path).runs).run_dir == extracted.path


def test_serving_and_training_see_identical_transformed_features(trained_on_extract, extracted):
    """For each test and validation image: the head input the tf.data pipeline fed (stored
    values → transform) equals the serving model's (image bytes → decode → backbone →
    transform), for PNG, JPEG, GIF, BMP, transparent PNG and EXIF-rotated JPEG alike."""
    model_dir, _ = trained_on_extract
    training_data = open_training_data(extracted.path)
    transform = load_transform(training_data.runs)
    config = TrainConfig(**FAST)
    fed = {}
    for split in ("validation", "test"):
        for features, _, uris in evaluation_dataset(training_data, split, config, transform):
            fed.update(zip((u.decode() for u in uris.numpy()), features.numpy()))
    stored = {**_split_rows(extracted, "validation"), **_split_rows(extracted, "test")}
    serving = tf.saved_model.load(os.path.join(model_dir, "serving"))
    uris = sorted(fed)
    out = serving.signatures[FEATURES_SIGNATURE](
        image_bytes=tf.constant([open(uri, "rb").read() for uri in uris]))
    assert len(uris) >= 8
    np.testing.assert_allclose(out[OUTPUT_TRANSFER_VALUES].numpy(),
                               np.stack([stored[u] for u in uris]), atol=1e-5)
    np.testing.assert_allclose(out[OUTPUT_HEAD_INPUT].numpy(),
                               np.stack([fed[u] for u in uris]), atol=1e-4)


def test_serving_sees_exif_rotated_photos_as_the_extract_job_stored_them(trained_on_extract, extracted):
    """The extract job's own output (Pillow: DCT-scaled decode, then EXIF transpose) against the
    serving graph's TF decode of the same sideways-stored JPEG bytes."""
    stored = {uri: values for split in ("train", "validation", "test")
              for uri, values in _split_rows(extracted, split).items()}
    rotated = sorted(uri for uri in stored if uri.endswith("rotated.jpg"))
    serving = tf.saved_model.load(os.path.join(trained_on_extract[0], "serving"))
    out = serving.signatures[FEATURES_SIGNATURE](
        image_bytes=tf.constant([open(uri, "rb").read() for uri in rotated]))
    assert len(rotated) == len(CLASSES)
    np.testing.assert_allclose(out[OUTPUT_TRANSFER_VALUES].numpy(),
                               np.stack([stored[uri] for uri in rotated]), atol=1e-5)


def test_union_uses_the_transform_of_the_run_with_the_largest_train_split(tmp_path):
    from beam_jobs.runs.read import committed_runs
    from tests.helpers import fake_runs as fx
    from trainer.train.data.transform import choose_transform_run

    sizes = {"20240101T000000-a": 30, "20240102T000000-b": 50, "20240103T000000-c": 0,
             "20240104T000000-d": 50}
    for run_id, train_size in sizes.items():
        run_dir = fx.write_run(str(tmp_path), run_id, per_class={"train": train_size, "test": 1})
        if run_id != "20240104T000000-d":  # d: the newest of the largest, but no transform_fn
            os.makedirs(os.path.join(run_dir, runs.TRANSFORM_FN))
    chosen = choose_transform_run(committed_runs(str(tmp_path)))
    assert chosen.run_id == "20240102T000000-b"
    assert choose_transform_run([r for r in committed_runs(str(tmp_path))
                                 if r.run_id.endswith(("c", "d"))]) is None
