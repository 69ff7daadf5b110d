"""Temperature scaling on synthetic logits whose true temperature is known."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.uncertainty import calibration


def _sampled(true_temperature: float, shown_scale: float, n: int = 4000, classes: int = 5,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z / true_temperature); the head shows z * shown_scale."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 3.0, (n, classes))
    p = np.exp(z / true_temperature)
    p /= p.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    return z * shown_scale, labels


def test_fitted_temperature_undoes_overconfidence():
    logits, labels = _sampled(1.0, shown_scale=3.0)
    temperature = calibration.fit_temperature(logits, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)


def test_calibration_lowers_ece_and_nll_and_keeps_the_ranking():
    val_logits, val_labels = _sampled(1.0, shown_scale=0.4, seed=1)  # under-confident head
    test_logits, test_labels = _sampled(1.0, shown_scale=0.4, seed=2)
    result = calibration.calibrate(val_logits, val_labels, test_logits, test_labels)
    assert result.temperature < 1.0
    assert result.ece < result.ece_uncalibrated / 2
    assert result.ece < 0.03
    assert result.nll < result.nll_uncalibrated
    before = calibration.tempered(test_logits, 1.0)
    after = calibration.tempered(test_logits, result.temperature)
    assert np.array_equal(before.argmax(axis=1), after.argmax(axis=1))
    assert np.allclose(after.sum(axis=1), 1.0, atol=1e-5)


def test_log_probabilities_calibrate_like_logits():
    logits, labels = _sampled(1.0, shown_scale=2.0, seed=3)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert calibration.fit_temperature(log_p, labels) == pytest.approx(
        calibration.fit_temperature(logits, labels), rel=1e-3)


def test_ece_of_a_perfectly_calibrated_table_is_zero_and_of_a_liar_is_large():
    labels = np.array([0, 0, 0, 1])  # 75 % of rows predicting class 0 at 0.75 are right
    honest = np.array([[0.75, 0.25]] * 4)
    liar = np.array([[0.99, 0.01]] * 4)
    assert calibration.expected_calibration_error(honest, labels) == pytest.approx(0.0)
    assert calibration.expected_calibration_error(liar, labels) == pytest.approx(0.24)


def test_reliability_bins_count_every_row_once():
    logits, labels = _sampled(1.0, shown_scale=1.0, n=500, seed=4)
    table = calibration.reliability(calibration.tempered(logits, 1.0), labels)
    assert table.counts.sum() == 500
    assert len(table.edges) == calibration.ECE_BINS + 1
    filled = table.counts > 0
    assert np.all((table.accuracy[filled] >= 0) & (table.accuracy[filled] <= 1))


def test_no_rows_or_no_mistakes_fit_the_identity_temperature():
    assert calibration.fit_temperature(np.zeros((0, 3)), np.zeros(0, int)) == 1.0
    separable = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])  # all right: T → 0 otherwise
    assert calibration.fit_temperature(separable, np.array([0, 1, 0])) == 1.0


@pytest.mark.parametrize("kind", ["functional", "sequential", "no softmax layer"])
def test_head_logits_are_the_softmax_inputs(kind):
    import keras
    import tensorflow as tf

    from trainer.uncertainty.logits import HeadLogits

    inputs = keras.Input((4,))
    if kind == "functional":
        head = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(
            keras.layers.Dense(5, activation="relu")(inputs)))
    elif kind == "sequential":
        head = keras.Sequential([inputs, keras.layers.Dense(5, activation="relu"),
                                 keras.layers.Dense(3, activation="softmax")])
    else:
        head = keras.Model(inputs, keras.layers.Softmax()(keras.layers.Dense(3)(inputs)))
    x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    logits = HeadLogits(head)(tf.constant(x)).numpy()
    np.testing.assert_allclose(tf.nn.softmax(logits), head(x), atol=1e-6)
