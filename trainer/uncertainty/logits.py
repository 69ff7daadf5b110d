"""Logits out of a head that ends in a softmax, in TensorFlow ops shared by evaluation and serving.

Our heads (trainer.heads) end in `Dense(activation="softmax")`, so the model itself returns
probabilities.  Temperature scaling and the energy score need the logits: taking log(p) would
turn every probability that float32 rounds to 0 (common on images unlike the training data) into
−inf.  `HeadLogits` recomputes the last layer without its softmax from the penultimate output,
exactly; a head of another shape falls back to log(p) clipped at the smallest float.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

_TINY = 1e-30


class HeadLogits:
    """`logits(features)` for a Keras head whose output is softmax probabilities."""

    def __init__(self, head: keras.Model):
        last = head.layers[-1]
        exact = (isinstance(last, keras.layers.Dense)
                 and last.activation is keras.activations.softmax)
        self.head = head
        self.last = last if exact else None
        self.body = _body(head) if exact else None  # shares the head's variables

    def __call__(self, features: tf.Tensor) -> tf.Tensor:
        if self.body is None or self.last is None:
            probabilities = self.head(features, training=False)
            return tf.math.log(tf.maximum(tf.cast(probabilities, tf.float32), _TINY))
        hidden = self.body(features, training=False)
        return tf.matmul(hidden, self.last.kernel) + self.last.bias


def _body(head: keras.Model):
    """The head's layers before its last, as one callable: a functional sub-model, or the
    layers applied in turn for a Sequential head (which has no symbolic input to cut at)."""
    if isinstance(head, keras.Sequential):
        layers = head.layers[:-1]

        def apply(features, training=False):
            for layer in layers:
                features = layer(features, training=training)
            return features

        return apply
    return keras.Model(head.input, head.layers[-1].input)


def mean_of_softmaxes(logits: tf.Tensor, mirrored_logits: tf.Tensor) -> tf.Tensor:
    """log((softmax(a) + softmax(b)) / 2), stably: the logits of a `--tta` head, whose
    probabilities are the mean over an image and its mirror."""
    both = tf.stack([tf.nn.log_softmax(logits), tf.nn.log_softmax(mirrored_logits)], axis=0)
    return tf.reduce_logsumexp(both, axis=0) - math.log(2.0)


def calibrated_probabilities(logits: tf.Tensor, temperature: float | tf.Tensor) -> tf.Tensor:
    """softmax(logits / T): the served probabilities (T = 1: the head's own)."""
    return tf.nn.softmax(logits / tf.cast(temperature, logits.dtype))
