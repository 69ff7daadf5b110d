"""trainer.serve.export and tv-predict: the serving model outside our code, and equal to our pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from beam_jobs import backbones
from beam_jobs.cli.launch import main
from beam_jobs.images.decode import resize_to_square
from tests.helpers import fake_runs as fx
from trainer.serve import export, predict
from trainer.train import fit
from trainer.train.config import TrainConfig
from trainer.train.data.dataset import feature_moments, open_training_data
from trainer.train.heads import build_model

# Runs in a fresh interpreter, isolated (-I) in a folder without our packages.
FRESH_CLIENT = """
import json, sys
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
images = [open(path, "rb").read() for path in sys.argv[2:]]
out = model.signatures["serving_default"](image_bytes=tf.constant(images))
ours = sorted(m for m in sys.modules if m.split(".")[0] in ("beam_jobs", "trainer", "schemas"))
print(json.dumps({"probabilities": out["probabilities"].numpy().tolist(),
                  "label": [s.decode() for s in out["label"].numpy()], "ours": ours}))
"""


@pytest.fixture(scope="module")
def model_dir(trained) -> str:
    return trained[1]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for seed, (height, width) in enumerate([(23, 31), (16, 16), (40, 9)]):
        path = folder / f"image{seed}.png"
        path.write_bytes(fx.random_png(seed, height, width))
        paths.append(str(path))
    return paths


def _in_process_probabilities(data: str, model_dir: str, image_paths: list[str]) -> np.ndarray:
    """decode → resize_to_square → backbone → head (from the best checkpoint) → the temperature
    of metrics.json: our own code step by step, no export involved."""
    training_data = open_training_data(data)
    backbone = backbones.load(training_data.backbone_handle)
    config = TrainConfig(head="softmax", batch_size=32, seed=5)
    head = build_model(config, training_data.feature_dim, training_data.num_classes,
                       *feature_moments(training_data, config))
    head.load_weights(os.path.join(model_dir, fit.CHECKPOINT))
    images = np.stack([resize_to_square(tf.io.decode_image(open(p, "rb").read(), channels=3),
                                        backbone.image_size).numpy() for p in image_paths])
    with open(os.path.join(model_dir, "metrics.json")) as f:
        temperature = json.load(f)["calibration"]["temperature"]
    log_p = np.log(head.predict_on_batch(backbone(images)).astype(np.float64))
    return tf.nn.softmax(log_p / temperature).numpy()


@pytest.mark.slow
def test_serving_model_classifies_png_bytes_in_a_fresh_process(trained, images, tmp_path):
    data, model_dir = trained
    result = subprocess.run(
        [sys.executable, "-I", "-c", FRESH_CLIENT, os.path.join(model_dir, "serving"), *images],
        capture_output=True, text=True, cwd=tmp_path,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    probabilities = np.asarray(served["probabilities"])
    with open(os.path.join(model_dir, "labels.txt")) as f:
        labels = f.read().split()

    assert served["ours"] == []
    assert labels == sorted(fx.CLASSES)
    assert probabilities.shape == (len(images), len(labels))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert served["label"] == [labels[i] for i in probabilities.argmax(axis=1)]
    np.testing.assert_allclose(probabilities, _in_process_probabilities(data, model_dir, images),
                               atol=1e-5)


def test_export_leaves_labels_beside_and_inside_serving_and_no_staging(model_dir):
    with open(os.path.join(model_dir, "labels.txt")) as f:
        beside = f.read()
    with open(os.path.join(model_dir, "serving", "assets", "labels.txt")) as f:
        inside = f.read()
    assert beside == inside == "".join(f"{label}\n" for label in sorted(fx.CLASSES))
    assert not [name for name in os.listdir(model_dir) if name.startswith(".")]


def test_export_tells_pixel_clients_how_to_preprocess(model_dir):
    """preprocessing.json beside labels.txt names the pixels signature and what to feed it."""
    with open(os.path.join(model_dir, export.PREPROCESSING_FILE)) as f:
        preprocessing = json.load(f)
    assert preprocessing[export.KEY_IMAGE_SIZE] == fx.IMAGE_SIZE
    assert preprocessing[export.KEY_RESIZE_POLICY] == "squash"
    assert preprocessing[export.KEY_JPEG_FACTOR] >= 0
    signatures = tf.saved_model.load(os.path.join(model_dir, "serving")).signatures
    pixels = signatures[preprocessing[export.KEY_PIXELS_SIGNATURE]]
    assert list(pixels.structured_input_signature[1]) == [preprocessing[export.KEY_PIXELS_INPUT]]


def test_tv_predict_prints_top_k_labels_per_image(model_dir, images, capsys):
    assert main(predict.run, ["--model", model_dir, "--top_k", "2", images[0], images[1]]) == 0
    lines = capsys.readouterr().out.splitlines()
    # random pixels may be marked "(unlike the training data: ood_score …)" after the path
    assert lines[0].split("  ")[0] == images[0] and lines[3].split("  ")[0] == images[1]
    for line in lines[1:3] + lines[4:6]:
        label, probability = line.strip().split(": ")
        assert label in fx.CLASSES and 0.0 <= float(probability) <= 1.0
    assert float(lines[1].split(": ")[1]) >= float(lines[2].split(": ")[1])


def test_tv_predict_missing_image_or_model_exits_2(model_dir, images, tmp_path, capsys):
    assert main(predict.run, ["--model", model_dir, str(tmp_path / "none.png")]) == 2
    assert main(predict.run, ["--model", str(tmp_path / "no_model"), images[0]]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)


@pytest.mark.slow
def test_tta_export_serves_the_mean_over_each_image_and_its_mirror(trained, images, tmp_path):
    """With --tta the graph averages the head over view 0 and view -1 (np.fliplr of the S×S
    input the backbone gets, as the extract job mirrors); without, it is the plain export."""
    data, model_dir = trained
    training_data = open_training_data(data)
    backbone = backbones.load(training_data.backbone_handle)
    head = keras.models.load_model(os.path.join(model_dir, fit.HEAD_FILE), compile=False)
    served = {}
    for tta in (False, True):
        export_dir = export.export_serving(
            head, backbone, training_data.labels, str(tmp_path / f"tta_{tta}" / "serving"),
            resize_policy=training_data.resize_policy, jpeg_factor=training_data.jpeg_factor,
            tta=tta)
        with open(tmp_path / f"tta_{tta}" / export.PREPROCESSING_FILE) as f:
            assert json.load(f)[export.KEY_TTA] is tta
        signatures = tf.saved_model.load(export_dir).signatures
        encoded = tf.constant([open(path, "rb").read() for path in images])
        served[tta] = (signatures["serving_default"](image_bytes=encoded),
                       signatures[export.FEATURES_SIGNATURE](image_bytes=encoded))
    squares = np.stack([resize_to_square(tf.io.decode_image(open(p, "rb").read(), channels=3),
                                         backbone.image_size).numpy() for p in images])
    view_0, mirror = backbone(squares), backbone(squares[:, :, ::-1])
    plain = head.predict_on_batch(view_0)
    np.testing.assert_allclose(served[True][0]["probabilities"],
                               (plain + head.predict_on_batch(mirror)) / 2, atol=1e-5)
    np.testing.assert_allclose(served[False][0]["probabilities"], plain, atol=1e-5)
    assert not np.allclose(served[True][0]["probabilities"], plain, atol=1e-5)
    for output in (export.OUTPUT_TRANSFER_VALUES, export.OUTPUT_HEAD_INPUT):
        np.testing.assert_array_equal(served[True][1][output], served[False][1][output])
    np.testing.assert_allclose(served[True][1][export.OUTPUT_TRANSFER_VALUES], view_0, atol=1e-5)
