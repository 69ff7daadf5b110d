"""The run's stored tensorflow-transform graph, applied to transfer values by training and serving.

One object wraps `tft.TFTransformOutput(run).transform_features_layer()`; the tf.data input
calls it on every batch and the serving module keeps the same object as an attribute, so the
exported SavedModel holds the identical graph (and its assets).  There is one transform per
model: with several runs, the run whose train split is largest (the newest among equals)
supplies it (see `choose_transform_run`).  Runs without any (older runs, hand-made test runs) fall back to a
Keras `Normalization` layer inside the head, fitted on the union's train split.
"""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

from beam_jobs.runs import read as runs
from beam_jobs.runs.read import Run
from schemas import record


def choose_transform_run(committed: Sequence[Run]) -> Optional[Run]:
    """Of the runs holding a transform_fn, the one with the largest train split (ties: the
    newest, run ids sort by time), or None.

    Why one run and not a merge: a z-score is an affine map the head absorbs, so one large
    sample's moments serve the union; what matters is that training and serving apply the
    very same graph, and one stored graph is what TFT can embed without re-analysis.  The
    largest train split rather than the newest run, because an incremental delta run may
    hold only a handful of new images.
    """
    with_transform = [run for run in committed if run.count(record.SPLITS[0]) > 0
                      and runs.exists(runs.join(run.path, runs.TRANSFORM_FN))]
    if not with_transform:
        return None
    return max(with_transform, key=lambda run: (run.count(record.SPLITS[0]), run.run_id))


def load_transform(committed: Sequence[Run]) -> Optional["TransferValueTransform"]:
    """The transform training and serving apply, or None (the head then normalises itself)."""
    chosen = choose_transform_run(committed)
    return TransferValueTransform(chosen.path) if chosen is not None else None


class TransferValueTransform(tf.Module):
    """transfer_values float32[N, D] → the z-scored values the head is trained on."""

    def __init__(self, run_dir: str):
        super().__init__(name="transfer_value_transform")
        import tensorflow_transform as tft

        self.run_dir = run_dir
        self.tft_layer = tft.TFTransformOutput(run_dir).transform_features_layer()

    def __call__(self, transfer_values: tf.Tensor) -> tf.Tensor:
        # The graph also maps the label through the run's vocabulary; the head does not use
        # that output, so serving (which has no label) feeds a placeholder name.
        placeholder_labels = tf.fill(tf.shape(transfer_values)[:1], "")
        transformed = self.tft_layer({record.LABEL: placeholder_labels,
                                      record.TRANSFER_VALUES: transfer_values})
        return transformed[record.TRANSFER_VALUES]
