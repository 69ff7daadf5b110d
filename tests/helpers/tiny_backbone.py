"""A tiny backbone SavedModel that honours the contract, for tests that need a fast one."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


class _TinyBackbone(tf.Module):
    def __init__(self, image_size: int, feature_dim: int, seed: int):
        super().__init__()
        rng = np.random.default_rng(seed)
        cells = 4 * 4 * 3
        self.size = image_size
        self.projection = tf.Variable(rng.normal(size=(cells, feature_dim)).astype("float32"))

    @tf.function
    def serve(self, images):
        x = tf.cast(images, tf.float32) / 255.0
        x = tf.image.resize(x, [4, 4], method="area")
        x = tf.reshape(x, [-1, 4 * 4 * 3])
        return {"transfer_values": tf.tanh(tf.matmul(x, self.projection))}


def make_tiny_backbone(path: str, image_size: int = 16, feature_dim: int = 8, seed: int = 0) -> str:
    """Save a contract SavedModel (uint8 [N,S,S,3] → transfer_values [N,D]) at `path`."""
    module = _TinyBackbone(image_size, feature_dim, seed)
    signature = module.serve.get_concrete_function(
        tf.TensorSpec([None, image_size, image_size, 3], tf.uint8, name="images"))
    tf.saved_model.save(module, path, signatures={"serving_default": signature})
    return path
