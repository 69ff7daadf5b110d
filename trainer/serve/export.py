"""Serving export: encoded image bytes in, class probabilities and label out, one SavedModel.

The exported graph chains decode → `beam_jobs.images.decode.resize_to_square` (with the runs' resize
policy) → the backbone's own SavedModel → the run's tensorflow-transform graph (when the runs
have one) → the trained head, i.e. the very functions that produced the training features, so
serving cannot drift from training.  The `transfer_values` signature returns the backbone
output and the transformed head input, so that claim can be checked (and debugged).

Decoding: the extract job decodes with Pillow (`beam_jobs.images.decode.decode_for_backbone`), serving
with TensorFlow ops (`beam_jobs.images.decode_tf`) that mirror it step by step: DCT-scaled JPEG
decode at the run's factor, EXIF orientation, 16-bit PNG, transparency on white; pixel for pixel
on JPEG, PNG, GIF, BMP and WebP.  Formats TF cannot decode (TIFF, …) go to `serving_pixels`,
which takes decoded uint8 pixels and resizes them with the same function (an S×S input is used
as it is), so a client that decodes with `decode_for_backbone` feeds exactly the training pixels.
`preprocessing.json` beside labels.txt tells such clients the size and policy.  A model
trained with `--tta` serves the mean of the head's probabilities on the S×S image and on its
left-right mirror (as the extract job's mirror views are made); its `transfer_values`
signatures still describe the image itself.

Knowing when unsure (trainer.uncertainty): the served probabilities are softmax(logits / T), T
fitted on the validation split (for `--tta`, the logits are the log of the mirror-averaged
probabilities), so the ranking is the head's own; and every classifying signature also returns
`ood_score` (higher: less like the training transfer values: the cosine distance to the 5th
nearest of a 1,000-image sample of the train split) and `in_distribution` (the score at most
the threshold that keeps 95 % of validation images in), computed in the graph from the image's
own transfer values (trainer.uncertainty.ood).  Clients need
only `tf.saved_model.load`: no Keras, no code of ours.  The export is written beside its final
place and renamed in, so a reader never sees a half-written model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Sequence

import keras
import tensorflow as tf

from beam_jobs.backbones import SIGNATURE_INPUT, SIGNATURE_OUTPUT, Backbone
from beam_jobs.images import decode as imaging
from beam_jobs.images.decode import RESIZE_POLICY, resize_to_square
from beam_jobs.images.decode_tf import decode_for_serving
from schemas.serving import (  # noqa: F401 - the contract's names, also as export.X
    FEATURES_PIXELS_SIGNATURE,
    FEATURES_SIGNATURE,
    INPUT_NAME,
    KEY_IMAGE_SIZE,
    KEY_JPEG_FACTOR,
    KEY_PIXELS_INPUT,
    KEY_PIXELS_SIGNATURE,
    KEY_RESIZE_POLICY,
    KEY_OOD,
    KEY_TEMPERATURE,
    KEY_TTA,
    LABELS_FILE,
    OUTPUT_HEAD_INPUT,
    OUTPUT_IN_DISTRIBUTION,
    OUTPUT_LABEL,
    OUTPUT_OOD_SCORE,
    OUTPUT_PROBABILITIES,
    OUTPUT_TRANSFER_VALUES,
    PIXELS_INPUT,
    PIXELS_SIGNATURE,
    PREPROCESSING_FILE,
    SERVING_DIR,
)
from trainer.uncertainty.assess import Uncertainty
from trainer.uncertainty.logits import HeadLogits, calibrated_probabilities, mean_of_softmaxes
from trainer.uncertainty.ood import TRANSFER_VALUES, OodScorer

# Run in a fresh interpreter that imports nothing of ours: proves the export is self-contained.
_VERIFY_SCRIPT = """
import json, sys
import tensorflow as tf
signatures = tf.saved_model.load(sys.argv[1]).signatures
png = tf.io.encode_png(tf.zeros([5, 7, 3], tf.uint8))
out = signatures["serving_default"](**{sys.argv[2]: tf.stack([png, png])})
out_pixels = signatures[sys.argv[3]](**{sys.argv[4]: tf.zeros([2, 5, 7, 3], tf.uint8)})
print(json.dumps([{k: v.shape.as_list() for k, v in o.items()} for o in (out, out_pixels)]))
"""


class ServingModule(tf.Module):
    """Backbone SavedModel, TFT transform and Keras head under one `serving_default`."""

    def __init__(self, backbone: Backbone, head: keras.Model, labels: Sequence[str],
                 labels_path: str, transform=None, resize_policy: str = RESIZE_POLICY,
                 jpeg_factor: int = 0, tta: bool = False,
                 uncertainty: Uncertainty = Uncertainty()):
        super().__init__(name="transfer_values_classifier")
        self.backbone = tf.saved_model.load(backbone.saved_model_dir)
        self.head = head
        self.transform = transform  # a tracked tf.Module: its graph and assets are saved too
        self.image_size = backbone.image_size
        self.resize_policy = resize_policy
        self.jpeg_factor = jpeg_factor
        self.tta = tta
        self.class_names = tf.constant(list(labels), tf.string)
        self.labels_asset = tf.saved_model.Asset(labels_path)  # copied into the SavedModel
        self.head_logits = HeadLogits(head)  # the head's own variables, without its softmax
        self.temperature = tf.Variable(float(uncertainty.temperature), dtype=tf.float32,
                                       trainable=False, name="temperature")
        self.ood = OodScorer(uncertainty.ood) if uncertainty.ood is not None else None

    def _decode(self, image_bytes: tf.Tensor) -> tf.Tensor:
        return decode_for_serving(image_bytes, self.image_size, self.resize_policy,
                                  self.jpeg_factor)

    def _square(self, pixels: tf.Tensor) -> tf.Tensor:
        """uint8 [N, H, W, 3] → [N, S, S, 3]; S×S pixels pass untouched (already resized)."""
        size = self.image_size
        shape = tf.shape(pixels)
        ready = tf.logical_and(tf.equal(shape[1], size), tf.equal(shape[2], size))
        square = tf.cond(ready, lambda: pixels,
                         lambda: resize_to_square(pixels, size, policy=self.resize_policy))
        return tf.ensure_shape(square, [None, size, size, 3])

    def _features(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        values = self.backbone.signatures["serving_default"](
            **{SIGNATURE_INPUT: images})[SIGNATURE_OUTPUT]
        return values, (self.transform(values) if self.transform is not None else values)

    def _decoded(self, image_bytes: tf.Tensor) -> tf.Tensor:
        size = self.image_size
        return tf.map_fn(self._decode, image_bytes,
                         fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8))

    def _logits(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """The head's logits, and the images' transfer values and head inputs; with TTA, the
        logits are the log of the mean of the softmaxes over the images and their mirrors (one
        backbone call on both halves of a doubled batch), the rest the images' own."""
        if not self.tta:
            values, head_input = self._features(images)
            return self.head_logits(head_input), values, head_input
        both = tf.concat([images, tf.image.flip_left_right(images)], axis=0)
        values, head_inputs = self._features(both)
        original, mirrored = tf.split(self.head_logits(head_inputs), 2)
        return (mean_of_softmaxes(original, mirrored), tf.split(values, 2)[0],
                tf.split(head_inputs, 2)[0])

    def _classify(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        logits, values, head_input = self._logits(images)
        probabilities = calibrated_probabilities(logits, self.temperature)
        label = tf.gather(self.class_names, tf.argmax(probabilities, axis=-1))
        outputs = {OUTPUT_PROBABILITIES: probabilities, OUTPUT_LABEL: label}
        if self.ood is not None:
            score = self.ood(values if self.ood.space == TRANSFER_VALUES else head_input)
            outputs[OUTPUT_OOD_SCORE] = score
            outputs[OUTPUT_IN_DISTRIBUTION] = self.ood.in_distribution(score)
        return outputs

    def _describe(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        values, head_input = self._features(images)
        return {OUTPUT_TRANSFER_VALUES: values, OUTPUT_HEAD_INPUT: head_input}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)])
    def serve(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._classify(self._decoded(image_bytes))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)])
    def transfer_values(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._describe(self._decoded(image_bytes))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8,
                                                name=PIXELS_INPUT)])
    def serve_pixels(self, pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._classify(self._square(pixels))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8,
                                                name=PIXELS_INPUT)])
    def transfer_values_pixels(self, pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._describe(self._square(pixels))


def write_labels(labels: Sequence[str], path: str) -> None:
    with open(path, "w") as f:
        f.write("".join(f"{label}\n" for label in labels))


def verify_in_fresh_process(export_dir: str, num_classes: int, with_ood: bool = False) -> None:
    """Load and call both the bytes and the pixels signature in a new interpreter; raise if
    either does not serve [N, C] (and [N] OOD outputs when `with_ood`)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-I", "-c", _VERIFY_SCRIPT, export_dir, INPUT_NAME,
                             PIXELS_SIGNATURE, PIXELS_INPUT],
                            capture_output=True, text=True, env=env, cwd=export_dir)
    if result.returncode != 0:
        raise RuntimeError(f"the serving export at {export_dir} failed to load in a fresh "
                           f"process:\n{result.stderr[-4000:]}")
    shapes = json.loads(result.stdout.strip().splitlines()[-1])
    expected = {OUTPUT_PROBABILITIES: [2, num_classes], OUTPUT_LABEL: [2],
                **({OUTPUT_OOD_SCORE: [2], OUTPUT_IN_DISTRIBUTION: [2]} if with_ood else {})}
    if shapes != [expected, expected]:
        raise RuntimeError(f"the serving export at {export_dir} returned shapes {shapes}")


def write_preprocessing(path: str, image_size: int, resize_policy: str, jpeg_factor: int,
                        tta: bool = False, uncertainty: Uncertainty = Uncertainty()) -> None:
    """What a client that decodes itself must reproduce: `decode_for_backbone(encoded,
    image_size, resize_policy)` with JPEGs DCT-scaled at `jpeg_factor`, then PIXELS_SIGNATURE
    (which does the mirror averaging itself when `tta`); and what its outputs mean."""
    ood = ({KEY_OOD: {**uncertainty.ood.describe(), "outputs": [OUTPUT_OOD_SCORE,
                                                                OUTPUT_IN_DISTRIBUTION]}}
           if uncertainty.ood is not None else {})
    with open(path, "w") as f:
        json.dump({KEY_IMAGE_SIZE: image_size, KEY_RESIZE_POLICY: resize_policy,
                   KEY_JPEG_FACTOR: jpeg_factor, KEY_PIXELS_SIGNATURE: PIXELS_SIGNATURE,
                   KEY_PIXELS_INPUT: PIXELS_INPUT, KEY_TTA: tta,
                   KEY_TEMPERATURE: uncertainty.temperature, **ood}, f, indent=2)
        f.write("\n")


def _publish(staging: str, target: str) -> None:
    """Swap `staging` in as `target`; an older export is moved aside first, then deleted."""
    old = None
    if os.path.exists(target):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}-old-",
                               dir=os.path.dirname(target))
        os.rename(target, os.path.join(old, "model"))
    os.rename(staging, target)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def export_serving(model: keras.Model, backbone: Backbone, labels: Sequence[str],
                   export_dir: str, *, transform=None, resize_policy: str = RESIZE_POLICY,
                   jpeg_factor: int | None = None, tta: bool = False,
                   uncertainty: Uncertainty = Uncertainty()) -> str:
    """Write the serving SavedModel to `export_dir`, and `labels.txt` and `preprocessing.json`
    beside it; return the dir.  `jpeg_factor`: the runs' `options.decode.
    jpeg_dct_scaling_factor` (None: this version's `beam_jobs.images.decode.DRAFT_FACTOR`); `tta`:
    serve the mean over each image and its mirror (`tv-train --tta`); `uncertainty`: the
    temperature and the thresholded OOD description (default: neither)."""
    factor = imaging.DRAFT_FACTOR if jpeg_factor is None else int(jpeg_factor)
    export_dir = os.path.abspath(export_dir)
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    staging_root = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}-", dir=parent)
    try:
        labels_path = os.path.join(staging_root, LABELS_FILE)
        write_labels(labels, labels_path)
        module = ServingModule(backbone, model, labels, labels_path, transform, resize_policy,
                               factor, tta, uncertainty)
        staging = os.path.join(staging_root, "model")
        tf.saved_model.save(module, staging, signatures={
            "serving_default": module.serve, FEATURES_SIGNATURE: module.transfer_values,
            PIXELS_SIGNATURE: module.serve_pixels,
            FEATURES_PIXELS_SIGNATURE: module.transfer_values_pixels})
        verify_in_fresh_process(staging, len(labels), uncertainty.ood is not None)
        write_labels(labels, os.path.join(parent, LABELS_FILE))
        write_preprocessing(os.path.join(parent, PREPROCESSING_FILE), backbone.image_size,
                            resize_policy, factor, tta, uncertainty)
        _publish(staging, export_dir)
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)
    return export_dir
