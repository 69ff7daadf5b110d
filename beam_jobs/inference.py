"""RunInference over a backbone SavedModel, without Keras.

Beam's TF handlers load through `keras.models.load_model`, which Keras 3 refuses for a
SavedModel; this small handler loads with `tf.saved_model.load` once per worker process
(RunInference shares it between the worker's threads) and feeds whole batches.

Images arrive at their decoded size and are resized here, one TF op per distinct shape in the
batch: per-image eager resizing cost about a third of the backbone's own time, and small
native images are cheaper to move between stages than 224×224 ones.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from beam_jobs.backbones import Backbone
from beam_jobs.imaging import resize_to_square


class BackboneModelHandler(ModelHandler[np.ndarray, PredictionResult, Any]):
    """uint8 [S,S,3] images in, float32 [D] transfer values out, in batches."""

    def __init__(self, backbone: Backbone, min_batch_size: int = 8, max_batch_size: int = 64,
                 intra_op_threads: int = 0):
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        self._backbone = backbone
        self._intra_op_threads = intra_op_threads

    def load_model(self) -> Any:
        import tensorflow as tf

        if self._intra_op_threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(self._intra_op_threads)
            except RuntimeError:
                pass  # TF already initialised in this process; keep its setting
        return self._backbone.signature()

    def run_inference(self, batch: Sequence[np.ndarray], model: Any,
                      inference_args: Optional[dict[str, Any]] = None
                      ) -> Iterable[PredictionResult]:
        import tensorflow as tf

        from beam_jobs.backbones import SIGNATURE_INPUT, SIGNATURE_OUTPUT

        images = tf.constant(self.resize_batch(batch))
        features = model(**{SIGNATURE_INPUT: images})[SIGNATURE_OUTPUT].numpy()
        return [PredictionResult(x, y) for x, y in zip(batch, features)]

    def resize_batch(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        """Decoded uint8 images of any sizes → uint8 [N, S, S, 3], resized group by group."""
        size = self._backbone.image_size
        out = np.empty((len(batch), size, size, 3), np.uint8)
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(batch):
            groups.setdefault(image.shape, []).append(index)
        for indices in groups.values():
            stacked = np.stack([batch[i] for i in indices])
            out[indices] = resize_to_square(stacked, size).numpy()
        return out

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return sum(x.nbytes for x in batch)

    def get_metrics_namespace(self) -> str:
        return "extract_backbone"
