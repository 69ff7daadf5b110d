"""Serving export: encoded image bytes in, class probabilities and label out, one SavedModel.

The exported graph chains decode → `beam_jobs.imaging.resize_to_square` (with the runs' resize
policy) → the backbone's own SavedModel → the run's tensorflow-transform graph (when the runs
have one) → the trained head, i.e. the very functions that produced the training features, so
serving cannot drift from training.  A second signature, `transfer_values`, returns the
backbone output and the transformed head input, so that claim can be checked (and debugged).

Decoding: the extract job decodes with Pillow, serving with TensorFlow ops (JPEG, PNG, GIF first
frame, BMP); `decode_like_pillow` makes them agree pixel for pixel on those formats (accurate
JPEG IDCT, transparency composited on white; tests/test_transform.py checks it).  One known
difference remains: Pillow applies the EXIF orientation tag, serving does not, so a camera
JPEG stored rotated is seen upright in training and rotated in serving: send upright pixels.  Clients need only `tf.saved_model.load`: no Keras, no code
of ours.  The export is written beside its final place and renamed in, so a reader never sees a
half-written model.
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
from beam_jobs.imaging import RESIZE_POLICY, resize_to_square

SERVING_DIR = "serving"
LABELS_FILE = "labels.txt"
# The serving contract (DESIGN.md): serving_default(image_bytes) -> {probabilities, label}.
INPUT_NAME = "image_bytes"
OUTPUT_PROBABILITIES = "probabilities"
OUTPUT_LABEL = "label"  # the predicted class name; a serving output, not the record field
FEATURES_SIGNATURE = "transfer_values"  # image_bytes → backbone output and head input
OUTPUT_TRANSFER_VALUES = "transfer_values"
OUTPUT_HEAD_INPUT = "head_input"

# Run in a fresh interpreter that imports nothing of ours: proves the export is self-contained.
_VERIFY_SCRIPT = """
import json, sys
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
png = tf.io.encode_png(tf.zeros([5, 7, 3], tf.uint8))
out = serve(**{sys.argv[2]: tf.stack([png, png])})
print(json.dumps({k: v.shape.as_list() for k, v in out.items()}))
"""


class ServingModule(tf.Module):
    """Backbone SavedModel, TFT transform and Keras head under one `serving_default`."""

    def __init__(self, backbone: Backbone, head: keras.Model, labels: Sequence[str],
                 labels_path: str, transform=None, resize_policy: str = RESIZE_POLICY):
        super().__init__(name="transfer_values_classifier")
        self.backbone = tf.saved_model.load(backbone.saved_model_dir)
        self.head = head
        self.transform = transform  # a tracked tf.Module: its graph and assets are saved too
        self.image_size = backbone.image_size
        self.resize_policy = resize_policy
        self.class_names = tf.constant(list(labels), tf.string)
        self.labels_asset = tf.saved_model.Asset(labels_path)  # copied into the SavedModel

    def _decode(self, image_bytes: tf.Tensor) -> tf.Tensor:
        image = decode_like_pillow(image_bytes)
        return resize_to_square(image, self.image_size, policy=self.resize_policy)

    def _features(self, image_bytes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        size = self.image_size
        images = tf.map_fn(self._decode, image_bytes,
                           fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8))
        values = self.backbone.signatures["serving_default"](
            **{SIGNATURE_INPUT: images})[SIGNATURE_OUTPUT]
        return values, (self.transform(values) if self.transform is not None else values)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)])
    def serve(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = self.head(self._features(image_bytes)[1], training=False)
        label = tf.gather(self.class_names, tf.argmax(probabilities, axis=-1))
        return {OUTPUT_PROBABILITIES: probabilities, OUTPUT_LABEL: label}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)])
    def transfer_values(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        values, head_input = self._features(image_bytes)
        return {OUTPUT_TRANSFER_VALUES: values, OUTPUT_HEAD_INPUT: head_input}


def decode_like_pillow(image_bytes: tf.Tensor) -> tf.Tensor:
    """Encoded bytes → uint8 RGB [H, W, 3], pixel for pixel what the extract job's Pillow
    decode gives for JPEG (accurate integer IDCT, as libjpeg in Pillow; TF's default fast IDCT
    is off by up to ±4 levels), PNG, GIF (first frame) and BMP."""
    def jpeg():
        return tf.io.decode_jpeg(image_bytes, channels=3, dct_method="INTEGER_ACCURATE")

    def other():
        return composite_on_white(tf.io.decode_image(image_bytes, channels=0,
                                                     expand_animations=False))

    image = tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)
    image.set_shape([None, None, 3])
    return image


def composite_on_white(image: tf.Tensor) -> tf.Tensor:
    """uint8 [H, W, 1|2|3|4] → RGB [H, W, 3], transparency over white as the extract job's
    Pillow decode does (tf.io.decode_image alone would drop alpha and leave a black ground)."""
    image.set_shape([None, None, None])
    pixels = tf.cast(image, tf.float32)
    channels = tf.shape(pixels)[-1]
    opaque = tf.ones_like(pixels[..., :1]) * 255.0
    rgba = tf.switch_case(channels - 1, [
        lambda: tf.concat([tf.repeat(pixels[..., :1], 3, axis=-1), opaque], -1),
        lambda: tf.concat([tf.repeat(pixels[..., :1], 3, axis=-1), pixels[..., 1:2]], -1),
        lambda: tf.concat([pixels[..., :3], opaque], -1),
        lambda: pixels[..., :4]])
    alpha = rgba[..., 3:] / 255.0
    rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
    return tf.cast(tf.clip_by_value(tf.round(rgb), 0.0, 255.0), tf.uint8)


def write_labels(labels: Sequence[str], path: str) -> None:
    with open(path, "w") as f:
        f.write("".join(f"{label}\n" for label in labels))


def verify_in_fresh_process(export_dir: str, num_classes: int) -> None:
    """Load and call the export in a new interpreter; raise if it does not serve [N, C]."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-I", "-c", _VERIFY_SCRIPT, export_dir, INPUT_NAME],
                            capture_output=True, text=True, env=env, cwd=export_dir)
    if result.returncode != 0:
        raise RuntimeError(f"the serving export at {export_dir} failed to load in a fresh "
                           f"process:\n{result.stderr[-4000:]}")
    shapes = json.loads(result.stdout.strip().splitlines()[-1])
    if shapes != {OUTPUT_PROBABILITIES: [2, num_classes], OUTPUT_LABEL: [2]}:
        raise RuntimeError(f"the serving export at {export_dir} returned shapes {shapes}")


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
                   export_dir: str, *, transform=None, resize_policy: str = RESIZE_POLICY) -> str:
    """Write the serving SavedModel to `export_dir` and `labels.txt` beside it; return the dir."""
    export_dir = os.path.abspath(export_dir)
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    staging_root = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}-", dir=parent)
    try:
        labels_path = os.path.join(staging_root, LABELS_FILE)
        write_labels(labels, labels_path)
        module = ServingModule(backbone, model, labels, labels_path, transform, resize_policy)
        staging = os.path.join(staging_root, "model")
        tf.saved_model.save(module, staging, signatures={
            "serving_default": module.serve, FEATURES_SIGNATURE: module.transfer_values})
        verify_in_fresh_process(staging, len(labels))
        write_labels(labels, os.path.join(parent, LABELS_FILE))
        _publish(staging, export_dir)
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)
    return export_dir
