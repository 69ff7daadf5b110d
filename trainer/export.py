"""Serving export: encoded image bytes in, class probabilities and label out, one SavedModel.

The exported graph chains decode → `beam_jobs.imaging.resize_to_square` → the backbone's own
SavedModel → the trained head, i.e. the very functions that produced the training features, so
serving cannot drift from training.  Clients need only `tf.saved_model.load`: no Keras, no code
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
from beam_jobs.imaging import resize_to_square

SERVING_DIR = "serving"
LABELS_FILE = "labels.txt"
# The serving contract (DESIGN.md): serving_default(image_bytes) -> {probabilities, label}.
INPUT_NAME = "image_bytes"
OUTPUT_PROBABILITIES = "probabilities"
OUTPUT_LABEL = "label"  # the predicted class name; a serving output, not the record field

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
    """The backbone SavedModel and the Keras head under one `serving_default` signature."""

    def __init__(self, backbone: Backbone, head: keras.Model, labels: Sequence[str],
                 labels_path: str):
        super().__init__(name="transfer_values_classifier")
        self.backbone = tf.saved_model.load(backbone.saved_model_dir)
        self.head = head
        self.image_size = backbone.image_size
        self.class_names = tf.constant(list(labels), tf.string)
        self.labels_asset = tf.saved_model.Asset(labels_path)  # copied into the SavedModel

    def _decode(self, image_bytes: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return resize_to_square(image, self.image_size)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)])
    def serve(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        size = self.image_size
        images = tf.map_fn(self._decode, image_bytes,
                           fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8))
        features = self.backbone.signatures["serving_default"](
            **{SIGNATURE_INPUT: images})[SIGNATURE_OUTPUT]
        probabilities = self.head(features, training=False)
        label = tf.gather(self.class_names, tf.argmax(probabilities, axis=-1))
        return {OUTPUT_PROBABILITIES: probabilities, OUTPUT_LABEL: label}


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
                   export_dir: str) -> str:
    """Write the serving SavedModel to `export_dir` and `labels.txt` beside it; return the dir."""
    export_dir = os.path.abspath(export_dir)
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    staging_root = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}-", dir=parent)
    try:
        labels_path = os.path.join(staging_root, LABELS_FILE)
        write_labels(labels, labels_path)
        module = ServingModule(backbone, model, labels, labels_path)
        staging = os.path.join(staging_root, "model")
        tf.saved_model.save(module, staging, signatures={"serving_default": module.serve})
        verify_in_fresh_process(staging, len(labels))
        write_labels(labels, os.path.join(parent, LABELS_FILE))
        _publish(staging, export_dir)
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)
    return export_dir
