"""Training hyperparameters: one immutable record, passed explicitly, defaults in one place.

The defaults are the head that measured best across two unlike datasets (benchmarks/
head_defaults.py, BENCHMARKS.md "Head defaults"): one wide ReLU layer with strong dropout and
label smoothing gained 1.8 points over a linear softmax head on all of Fashion-MNIST (0.919 vs
0.901) and stayed within noise of it on scikit-learn's 1,797 digits (0.909 vs 0.917, 2 of 264
test images); a wide layer costs more per epoch (about 11 s vs 2 s on 54k images, 2 cores),
which is small beside extraction.  `tv-train --tune` searches around this point.  Every flag of
`tv-train` takes its default from here.
"""

from __future__ import annotations

import dataclasses

from beam_jobs.cli.errors import UserError

HEADS = ("softmax", "hidden")
TFRECORD, PARQUET = "tfrecord", "parquet"
INPUT_FORMATS = (TFRECORD, PARQUET)
CLASS_WEIGHTS = ("none", "balanced")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run; a fixed `seed` makes the run repeatable."""

    head: str = "hidden"  # "softmax": z-score → Dense softmax; "hidden": ReLU layers first
    hidden_units: int = 2048
    hidden_layers: int = 1  # "hidden" head: this many Dense ReLU + Dropout layers, same width
    dropout: float = 0.5
    l2: float = 1e-5
    learning_rate: float = 5e-4
    batch_size: int = 128
    epochs: int = 50  # a maximum: early stopping usually ends training well before
    patience: int = 6
    seed: int | None = 42  # None: faster non-deterministic input order, unrepeatable metrics
    shuffle_buffer: int = 10_000  # ≥ a few thousand examples means a full shuffle
    label_smoothing: float = 0.1
    class_weights: str = "none"  # "balanced": weight n / (C · n_c), for imbalanced train splits
    input_format: str = TFRECORD  # which shards to stream: the TFRecords or the Parquet copy
    top_k: int = 5  # metrics.json reports top-1 … top-k accuracy (k capped at the class count)
    tta: bool = False  # evaluate and serve on the mean of an image's and its mirror's probabilities

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise UserError(f"Unknown head {self.head!r}: use one of {', '.join(HEADS)}.")
        if self.class_weights not in CLASS_WEIGHTS:
            raise UserError(f"Unknown --class_weights {self.class_weights!r}: use one of "
                            f"{', '.join(CLASS_WEIGHTS)}.")
        if self.input_format not in INPUT_FORMATS:
            raise UserError(f"Unknown --format {self.input_format!r}: use one of "
                            f"{', '.join(INPUT_FORMATS)}.")
        positive = {"hidden_units": self.hidden_units, "hidden_layers": self.hidden_layers,
                    "learning_rate": self.learning_rate,
                    "batch_size": self.batch_size, "epochs": self.epochs,
                    "shuffle_buffer": self.shuffle_buffer, "top_k": self.top_k}
        for name, value in positive.items():
            if value <= 0:
                raise UserError(f"--{name} must be positive, got {value}.")
        if self.patience < 0 or self.l2 < 0:
            raise UserError("--patience and --l2 must not be negative.")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.label_smoothing < 1.0:
            raise UserError("--dropout and --label_smoothing must lie in [0, 1).")
