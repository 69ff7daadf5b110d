"""How unlike the training data an image is: a compact description of the training transfer
values, and its score in TensorFlow ops, so the serving graph computes it for any TF client.

Two descriptions, measured side by side in benchmarks/ood_detection.py (BENCHMARKS.md, issue 23):

- `knn` (the export's): cosine distance to the k-th nearest of a bounded sample of training
  transfer values (deep nearest neighbours, Sun et al., 2022), drawn uniformly in one streaming
  pass (`KnnReservoir`), L2-normalised and stored as float16: M × D × 2 bytes (1000 × 1280:
  2.6 MB).  It runs on the raw transfer values, the space tv-audit's outliers are measured in
  (cosine to nearest neighbours), where it separated every pair of domains measured (AUROC
  ≥ 0.99; on the z-scored head input 0.98–0.99).
- `gaussian`: class-conditional Gaussians with one shared covariance (Mahalanobis, Lee et al.,
  2018) on the head input, fitted in one streaming pass (per-class sums and one D×D scatter).
  The score is the smallest Mahalanobis distance to a class mean, per dimension (≈ 1 for a
  typical training image); only the `max_components` directions of largest within-class
  variance are kept exactly, the rest is one isotropic residual (probabilistic PCA).  Perfect
  on photos, but it missed upscaled digits against Fashion-MNIST (AUROC 0.87–0.93): the
  digits sit inside the clothes' Gaussian envelope while no clothing image is near them.

The threshold is the validation split's `IN_DISTRIBUTION_QUANTILE` quantile: 95 % of validation
images are in-distribution.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping

import numpy as np
import tensorflow as tf

GAUSSIAN, KNN = "gaussian", "knn"
METHODS = (GAUSSIAN, KNN)
IN_DISTRIBUTION_QUANTILE = 0.95
MAX_COMPONENTS = 256  # gaussian: directions kept exactly (1280-D: 1.3 MB of float32)
SHRINKAGE = 1e-3  # ridge on the shared covariance, relative to its mean variance
KNN_SAMPLE = 1000  # knn: training vectors kept (measured: 500 lost 0.4-1.6 AUROC points)
KNN_K = 5  # knn: rank of the neighbour whose distance is the score (k=1 was noisy)
TRANSFER_VALUES, HEAD_INPUT = "transfer_values", "head_input"  # the space a description is in


@dataclasses.dataclass(frozen=True)
class OodDescription:
    """The training transfer values in a few arrays (numpy), and the in-distribution threshold."""

    method: str
    arrays: Mapping[str, np.ndarray]
    threshold: float = float("inf")
    k: int = 1
    space: str = HEAD_INPUT  # which vectors it scores: the head input or the raw transfer values

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays.values()))

    def with_threshold(self, validation_scores: np.ndarray,
                       quantile: float = IN_DISTRIBUTION_QUANTILE) -> "OodDescription":
        """The same description, with the threshold that keeps `quantile` of these scores in."""
        threshold = float(np.quantile(np.asarray(validation_scores, np.float64), quantile))
        return dataclasses.replace(self, threshold=threshold)

    def describe(self) -> dict:
        """What metrics.json and the export's note record."""
        return {"method": self.method, "space": self.space, "threshold": self.threshold,
                "bytes": self.nbytes,
                "in_distribution_quantile": IN_DISTRIBUTION_QUANTILE,
                **{f"{name}_shape": list(a.shape) for name, a in self.arrays.items()},
                **({"k": self.k} if self.method == KNN else {})}


class GaussianAccumulator:
    """Per-class counts and sums and the total scatter Σ x xᵀ, added batch by batch (float64)."""

    def __init__(self, feature_dim: int, num_classes: int):
        self.counts = np.zeros(num_classes, np.int64)
        self.sums = np.zeros((num_classes, feature_dim), np.float64)
        self.scatter = np.zeros((feature_dim, feature_dim), np.float64)

    def add(self, features: np.ndarray, label_ids: np.ndarray) -> None:
        x = np.asarray(features, np.float64)
        label_ids = np.asarray(label_ids, np.int64).ravel()
        self.counts += np.bincount(label_ids, minlength=len(self.counts))
        np.add.at(self.sums, label_ids, x)
        self.scatter += x.T @ x

    def description(self, max_components: int = MAX_COMPONENTS,
                    shrinkage: float = SHRINKAGE) -> OodDescription:
        present = self.counts > 0
        counts, sums = self.counts[present], self.sums[present]
        means = sums / counts[:, None]
        within = self.scatter - (means.T * counts) @ means
        dim = within.shape[0]
        covariance = within / max(int(counts.sum()) - len(counts), 1)
        covariance += np.eye(dim) * shrinkage * max(np.trace(covariance) / dim, 1e-12)
        variances, vectors = np.linalg.eigh(covariance)  # ascending
        order = np.argsort(-variances)
        kept = order[:min(max_components, dim)]
        rest = variances[order[len(kept):]]
        residual_precision = 1.0 / float(rest.mean()) if len(rest) else 0.0
        basis = vectors[:, kept]
        arrays = {"means": means.astype(np.float32), "basis": basis.astype(np.float32),
                  "projected_means": (means @ basis).astype(np.float32),
                  "precision": (1.0 / variances[kept]).astype(np.float32),
                  "residual_precision": np.array([residual_precision], np.float32)}
        return OodDescription(GAUSSIAN, arrays)


def fit_gaussian(batches: Iterable[tuple[np.ndarray, np.ndarray]], feature_dim: int,
                 num_classes: int, max_components: int = MAX_COMPONENTS) -> OodDescription:
    """The gaussian description from (features, label_ids) batches, in one pass."""
    accumulator = GaussianAccumulator(feature_dim, num_classes)
    for features, label_ids in batches:
        accumulator.add(features, label_ids)
    if not accumulator.counts.any():
        raise ValueError("no training vectors to describe")
    return accumulator.description(max_components)


def fit_knn(features: np.ndarray, sample: int = KNN_SAMPLE, k: int = KNN_K, seed: int = 0,
            space: str = HEAD_INPUT) -> OodDescription:
    """The knn description: `sample` rows drawn uniformly, L2-normalised, float16."""
    reservoir = KnnReservoir(sample, seed)
    reservoir.add(features)
    return reservoir.description(k, space)


class KnnReservoir:
    """A uniform sample of at most `size` rows of a stream, in bounded memory: every row gets a
    random key and the `size` smallest keys stay (a reservoir sample without replacement)."""

    def __init__(self, size: int = KNN_SAMPLE, seed: int = 0):
        self.size = size
        self.rng = np.random.default_rng(seed)
        self.keys = np.zeros(0)
        self.rows: np.ndarray | None = None

    def add(self, features: np.ndarray) -> None:
        features = np.asarray(features, np.float32)
        keys = np.r_[self.keys, self.rng.random(len(features))]
        rows = features if self.rows is None else np.concatenate([self.rows, features])
        kept = np.argsort(keys, kind="stable")[:self.size]
        self.keys, self.rows = keys[kept], rows[kept]

    def description(self, k: int = KNN_K, space: str = HEAD_INPUT) -> OodDescription:
        if self.rows is None or not len(self.rows):
            raise ValueError("no training vectors to describe")
        kept = self.rows / np.maximum(np.linalg.norm(self.rows, axis=1, keepdims=True), 1e-12)
        return OodDescription(KNN, {"sample": kept.astype(np.float16)},
                              k=max(1, min(k, len(kept))), space=space)


class OodScorer(tf.Module):
    """The description as TF variables and its score as TF ops: the serving graph's part, and the
    one implementation evaluation, benchmarks and the audit call (eagerly)."""

    def __init__(self, description: OodDescription):
        super().__init__(name="ood")
        self.method = description.method
        self.k = description.k
        self.space = description.space
        self.arrays = {name: tf.Variable(array, trainable=False, name=name)
                       for name, array in description.arrays.items()}
        self.threshold = tf.Variable(np.float32(description.threshold), trainable=False,
                                     name="threshold")

    def __call__(self, features: tf.Tensor) -> tf.Tensor:
        """float32 [N, D] head inputs → float32 [N] scores, higher = more unusual."""
        features = tf.cast(features, tf.float32)
        if self.method == KNN:
            return _knn_score(features, self.arrays["sample"], self.k)
        return _gaussian_score(features, self.arrays)

    def in_distribution(self, scores: tf.Tensor) -> tf.Tensor:
        return scores <= self.threshold


def _gaussian_score(x: tf.Tensor, arrays: Mapping[str, tf.Variable]) -> tf.Tensor:
    """min over classes of the (PPCA-approximated) Mahalanobis distance, divided by D.

    Every term is expanded into [N, C] matrix products (never an [N, C, K] difference), so the
    cost is two [N, D] × [D, K or C] products whatever the number of classes."""
    means, centres, precision = arrays["means"], arrays["projected_means"], arrays["precision"]
    y = tf.matmul(x, arrays["basis"])  # [N, K]

    def squared_distance(a, b, weight=None):  # Σ_k w_k (a_nk − b_ck)², [N, C]
        w = tf.ones_like(a[0]) if weight is None else weight
        return (tf.reduce_sum(tf.square(a) * w, axis=1, keepdims=True)
                - 2.0 * tf.matmul(a * w, b, transpose_b=True)
                + tf.reduce_sum(tf.square(b) * w, axis=1)[None])

    kept = squared_distance(y, centres, precision)
    residual = tf.maximum(squared_distance(x, means) - squared_distance(y, centres), 0.0)
    distance = kept + residual * arrays["residual_precision"][0]
    return tf.reduce_min(distance, axis=1) / tf.cast(tf.shape(x)[1], tf.float32)


def _knn_score(x: tf.Tensor, sample: tf.Variable, k: int) -> tf.Tensor:
    """1 − cosine similarity to the k-th most similar sample vector."""
    similarity = tf.matmul(tf.math.l2_normalize(x, axis=1), tf.cast(sample, tf.float32),
                           transpose_b=True)
    return 1.0 - tf.math.top_k(similarity, k=k).values[:, k - 1]


def scores(scorer: OodScorer, features: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Eager scores of a numpy array, in batches (bounded memory for any N)."""
    out = [scorer(tf.constant(features[i:i + batch])).numpy()
           for i in range(0, len(features), batch)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)
