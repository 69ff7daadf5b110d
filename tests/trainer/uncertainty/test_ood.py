"""The out-of-distribution description on synthetic clusters: far points score high, the
threshold keeps 95 % of held-out in-distribution points, and the TF score matches numpy."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from trainer.uncertainty import ood


def _clusters(n: int, dim: int = 12, classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 4, (classes, dim))
    labels = rng.integers(0, classes, n)
    scales = np.linspace(0.3, 2.0, dim)  # anisotropic: Mahalanobis differs from Euclid
    return (centres[labels] + rng.normal(0, 1, (n, dim)) * scales).astype(np.float32), labels


def _fitted(method: str, components: int = 12):
    x, y = _clusters(3000)
    if method == ood.GAUSSIAN:
        batches = [(x[i:i + 500], y[i:i + 500]) for i in range(0, len(x), 500)]
        description = ood.fit_gaussian(batches, x.shape[1], 3, max_components=components)
    else:
        description = ood.fit_knn(x, sample=500, k=3)
    validation, _ = _clusters(2000, seed=1)
    scorer = ood.OodScorer(description)
    return description.with_threshold(ood.scores(scorer, validation))


@pytest.mark.parametrize("method,components", [(ood.GAUSSIAN, 12), (ood.GAUSSIAN, 4),
                                               (ood.KNN, 0)])
def test_far_points_score_higher_and_95_percent_stay_in(method, components):
    description = _fitted(method, components)
    scorer = ood.OodScorer(description)
    held_out, _ = _clusters(2000, seed=2)
    far = np.random.default_rng(3).normal(0, 1, (200, 12)).astype(np.float32) * 6 + 15
    inside = scorer.in_distribution(ood.scores(scorer, held_out)).numpy()
    outside = scorer.in_distribution(ood.scores(scorer, far)).numpy()
    assert 0.92 <= inside.mean() <= 0.98
    assert not outside.any()


def test_gaussian_score_is_the_smallest_mahalanobis_distance_per_dimension():
    x, y = _clusters(3000)
    description = ood.fit_gaussian([(x, y)], 12, 3, max_components=12)
    queries, _ = _clusters(50, seed=5)
    means = np.stack([x[y == c].mean(axis=0) for c in range(3)])
    centred = x - means[y]
    covariance = centred.T @ centred / (len(x) - 3)
    covariance += np.eye(12) * ood.SHRINKAGE * np.trace(covariance) / 12
    precision = np.linalg.inv(covariance)
    expected = np.min([np.einsum("nd,de,ne->n", queries - m, precision, queries - m)
                       for m in means], axis=0) / 12
    got = ood.scores(ood.OodScorer(description), queries)
    assert np.allclose(got, expected, rtol=1e-3, atol=1e-4)


def test_truncated_gaussian_is_small_and_still_sees_the_dropped_directions():
    x, y = _clusters(3000, dim=40)
    description = ood.fit_gaussian([(x, y)], 40, 3, max_components=5)
    assert description.arrays["basis"].shape == (40, 5)
    scorer = ood.OodScorer(description)
    base = x[:100]
    basis = description.arrays["basis"]
    away = np.linalg.svd(np.eye(40) - basis @ basis.T)[0][:, 0]  # a direction not kept
    moved = (base + 25 * away).astype(np.float32)
    assert np.all(ood.scores(scorer, moved) > ood.scores(scorer, base) + 1)


def test_the_scorer_saves_and_scores_the_same_after_loading(tmp_path):
    description = _fitted(ood.GAUSSIAN, 6)
    scorer = ood.OodScorer(description)
    scorer.score = tf.function(scorer.__call__,
                               input_signature=[tf.TensorSpec([None, 12], tf.float32)])
    tf.saved_model.save(scorer, str(tmp_path / "ood"))
    loaded = tf.saved_model.load(str(tmp_path / "ood"))
    queries, _ = _clusters(20, seed=7)
    assert np.allclose(loaded.score(queries).numpy(), ood.scores(scorer, queries), rtol=1e-6)
    assert float(loaded.threshold.numpy()) == pytest.approx(description.threshold)


def test_reservoir_keeps_a_bounded_uniform_sample_of_a_stream():
    reservoir = ood.KnnReservoir(size=300, seed=1)
    stream = np.arange(6000, dtype=np.float32)[:, None] * np.ones((1, 4), np.float32)
    for start in range(0, 6000, 700):  # batches of uneven size
        reservoir.add(stream[start:start + 700])
    kept = reservoir.rows[:, 0]
    assert len(kept) == 300 == len(np.unique(kept))
    assert 0.4 < np.mean(kept < 3000) < 0.6  # drawn from the whole stream, not its start
    description = reservoir.description(k=5, space=ood.TRANSFER_VALUES)
    assert description.arrays["sample"].dtype == np.float16
    assert description.nbytes == 300 * 4 * 2 and description.space == ood.TRANSFER_VALUES
