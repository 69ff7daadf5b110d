"""The export's calibrated probabilities and OOD outputs, as tv-predict and the batch job show
them; and an export without them (made before issue 23) predicting as before, with a note."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from beam_jobs import backbones
from beam_jobs.images.decode import decode_for_backbone
from beam_jobs.predict import model as predict_model
from beam_jobs.predict import pipeline as batch_predict
from tests.helpers import fake_runs as fx
from trainer.serve import export, predict
from trainer.uncertainty import ood
from trainer.uncertainty.assess import Uncertainty

TEMPERATURE = 0.5


@pytest.fixture(scope="module")
def parts(tiny_backbone, tmp_path_factory):
    """(head, backbone, images, description): a softmax head over the tiny backbone and the knn
    description of the transfer values of some random 'training' images."""
    backbone = backbones.load(tiny_backbone)
    head = fx.random_softmax_head(backbone.feature_dim, scale=1.0)
    folder = tmp_path_factory.mktemp("images")
    images = []
    for seed in range(3):
        (folder / f"image{seed}.png").write_bytes(fx.random_png(seed, 23, 31))
        images.append(str(folder / f"image{seed}.png"))
    train = np.stack([decode_for_backbone(fx.random_png(100 + i, 20, 20), backbone.image_size)
                      for i in range(60)])
    features = backbone(train)
    description = ood.fit_knn(features, sample=40, k=3, space=ood.TRANSFER_VALUES)
    return head, backbone, images, description


def _export(parts, root, threshold=None) -> str:
    head, backbone, _, description = parts
    uncertainty = Uncertainty()
    if threshold is not None:
        uncertainty = Uncertainty(TEMPERATURE, dataclasses.replace(description,
                                                                   threshold=threshold))
    model_dir = str(root)
    export.export_serving(head, backbone, sorted(fx.CLASSES),
                          os.path.join(model_dir, export.SERVING_DIR), uncertainty=uncertainty)
    return model_dir


@pytest.fixture(scope="module")
def flagging_model(parts, tmp_path_factory) -> str:
    """An export whose threshold is below every score: every image is unlike the training data."""
    return _export(parts, tmp_path_factory.mktemp("flagging"), threshold=-1.0)


def test_signatures_serve_tempered_probabilities_and_the_ood_score(parts, flagging_model):
    head, backbone, images, description = parts
    saved = tf.saved_model.load(os.path.join(flagging_model, export.SERVING_DIR))
    pixels = np.stack([decode_for_backbone(open(p, "rb").read(), backbone.image_size)
                       for p in images])
    out = saved.signatures[export.PIXELS_SIGNATURE](**{export.PIXELS_INPUT: pixels})
    features = backbone(pixels)
    logits = np.log(head.predict_on_batch(features).astype(np.float64))
    np.testing.assert_allclose(out[export.OUTPUT_PROBABILITIES],
                               tf.nn.softmax(logits / TEMPERATURE), atol=1e-5)
    expected = ood.scores(ood.OodScorer(description), features)
    np.testing.assert_allclose(out[export.OUTPUT_OOD_SCORE], expected, rtol=1e-4)
    assert not out[export.OUTPUT_IN_DISTRIBUTION].numpy().any()
    encoded = tf.constant([open(p, "rb").read() for p in images])
    by_bytes = saved.signatures["serving_default"](**{export.INPUT_NAME: encoded})
    assert set(by_bytes) == set(out) == {export.OUTPUT_PROBABILITIES, export.OUTPUT_LABEL,
                                        export.OUTPUT_OOD_SCORE, export.OUTPUT_IN_DISTRIBUTION}
    with open(os.path.join(flagging_model, export.PREPROCESSING_FILE)) as f:
        written = json.load(f)
    assert written[export.KEY_TEMPERATURE] == TEMPERATURE
    assert written[export.KEY_OOD]["threshold"] == -1.0


def test_tv_predict_marks_images_unlike_the_training_data(parts, flagging_model, tmp_path,
                                                          capsys):
    images = parts[2]
    predict.run([f"--model={flagging_model}", "--top_k=2", *images])
    flagged = capsys.readouterr()
    heads = [line for line in flagged.out.splitlines() if not line.startswith("  ")]
    assert len(heads) == 3 and all(predict.UNLIKE[:-1] in line for line in heads)
    plain = _export(parts, tmp_path / "plain")  # no description: as exported before
    predict.run([f"--model={plain}", "--top_k=2", *images])
    before = capsys.readouterr()
    assert before.out.splitlines()[0] == images[0]
    assert predict_model.OLD_EXPORT_NOTE in before.err


@pytest.mark.slow
def test_batch_job_writes_ood_columns_and_counts_the_flagged(parts, flagging_model, tmp_path):
    source = tmp_path / "source" / "cat"
    source.mkdir(parents=True)
    for seed in range(3):
        (source / f"{seed}.png").write_bytes(fx.random_png(seed, 23, 31))
    output = tmp_path / "predictions"
    manifest = batch_predict.run([f"--model={flagging_model}",
                                  f"--source=folder:{source.parent}", f"--output={output}",
                                  "--no_progress"])
    rows = [row for path in output.glob("predictions-*.parquet")
            for row in pq.read_table(path).to_pylist()]
    assert manifest["out_of_distribution"] == manifest["predicted"] == 3
    assert all(row["in_distribution"] is False and row["ood_score"] > -1.0 for row in rows)
    header = next(output.glob("predictions-*.csv")).read_text().splitlines()[0]
    assert header.endswith("ood_score,in_distribution")
