"""RunInference over a backbone SavedModel, without Keras.

Beam's TF handlers load through `keras.models.load_model`, which Keras 3 refuses for a
SavedModel; this small handler loads with `tf.saved_model.load` once per worker process
(RunInference shares it between the worker's threads) and feeds whole batches.

Photos arrive already resized to the backbone's S×S input by the decode stage (which overlaps
that work with inference), so no batch holds full-resolution pixels.  Images no larger than S
(IDX, CIFAR, icons) travel at their native size, fewer bytes than S×S, and are enlarged here
with the same `resize_to_square`, in one graph with the forward pass when a batch shares a shape.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Optional, Sequence

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from beam_jobs.backbones import Backbone
from beam_jobs.images.decode import compiled_resize, resize_to_square

INTRA_OP_ENV = "TF_NUM_INTRAOP_THREADS"  # read by TensorFlow when its runtime starts
INTER_OP_ENV = "TF_NUM_INTEROP_THREADS"


def pin_tf_threads(threads: int) -> None:
    """Give TensorFlow `threads` intra-op and one inter-op thread in this process and in worker
    processes started from it (they inherit the environment); a no-op where TF already runs."""
    os.environ.setdefault(INTRA_OP_ENV, str(threads))
    os.environ.setdefault(INTER_OP_ENV, "1")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TF already initialised in this process; keep its setting


_FORWARDS: dict[tuple[int, int, str, int], Any] = {}


def _resize_and_forward(model: Any, size: int, policy: str, channels: int):
    """One graph for resize + backbone: no 224x224 batch copied out to numpy and back in, and
    one call for TensorFlow to schedule (about 5 % of the forward pass on 28x28 images)."""
    key = (id(model), size, policy, channels)
    forward = _FORWARDS.get(key)
    if forward is None:
        import tensorflow as tf

        from beam_jobs.backbones import SIGNATURE_INPUT, SIGNATURE_OUTPUT

        def resize_and_forward(images):
            resized = resize_to_square(images, size=size, policy=policy)
            return model(**{SIGNATURE_INPUT: resized})[SIGNATURE_OUTPUT]

        forward = tf.function(resize_and_forward, autograph=False, input_signature=[
            tf.TensorSpec([None, None, None, channels], tf.uint8)])
        _FORWARDS[key] = forward
    return forward


class BackboneModelHandler(ModelHandler[np.ndarray, PredictionResult, Any]):
    """uint8 [S,S,3] (or smaller, native-size) images in, float32 [D] out, in batches."""

    def __init__(self, backbone: Backbone, min_batch_size: Optional[int] = None,
                 max_batch_size: int = 64, intra_op_threads: int = 0,
                 resize_policy: str = "squash"):
        # Fixed-size batches by default: BatchElements would otherwise start at a few images
        # and grow, and small batches cost the backbone up to twice as much per image.
        super().__init__(min_batch_size=min_batch_size or max_batch_size,
                         max_batch_size=max_batch_size)
        self._backbone = backbone
        self._intra_op_threads = intra_op_threads
        self._resize_policy = resize_policy  # recorded in the manifest; serving reuses it

    def load_model(self) -> Any:
        if self._intra_op_threads:
            pin_tf_threads(self._intra_op_threads)
        return self._backbone.signature()

    def run_inference(self, batch: Sequence[np.ndarray], model: Any,
                      inference_args: Optional[dict[str, Any]] = None
                      ) -> Iterable[PredictionResult]:
        import tensorflow as tf

        from beam_jobs.backbones import SIGNATURE_INPUT, SIGNATURE_OUTPUT

        size = self._backbone.image_size
        shapes = {image.shape for image in batch}
        if shapes == {(size, size, 3)}:  # photos, resized by the decode stage
            features = model(**{SIGNATURE_INPUT: tf.constant(np.stack(batch))})[
                SIGNATURE_OUTPUT]
        elif len(shapes) == 1:  # small native images: enlarge and forward in one graph call
            stacked = np.stack(batch)
            features = _resize_and_forward(model, size, self._resize_policy,
                                           stacked.shape[-1])(stacked)
        else:
            features = model(**{SIGNATURE_INPUT: tf.constant(self.resize_batch(batch))})[
                SIGNATURE_OUTPUT]
        return [PredictionResult(x, y) for x, y in zip(batch, features.numpy())]

    def resize_batch(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 images of any sizes → uint8 [N, S, S, 3]; S×S×3 ones as they are, the others
        resized group by group (one compiled resize per distinct shape)."""
        size = self._backbone.image_size
        out = np.empty((len(batch), size, size, 3), np.uint8)
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(batch):
            groups.setdefault(image.shape, []).append(index)
        for shape, indices in groups.items():
            stacked = np.stack([batch[i] for i in indices])
            if shape != (size, size, 3):
                stacked = compiled_resize(size, self._resize_policy, shape[-1])(stacked).numpy()
            out[indices] = stacked
        return out

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return sum(x.nbytes for x in batch)

    def get_metrics_namespace(self) -> str:
        return "extract_backbone"
