"""Training hyperparameters: one immutable record, passed explicitly, defaults in one place.

The defaults suit a few thousand examples of ~1280-d transfer values (EfficientNet-Lite0): a
linear softmax head is already strong on frozen ImageNet features, so the hidden head, dropout
and L2 are there to try, not to need.  Every flag of `tv-train` takes its default from here.
"""

from __future__ import annotations

import dataclasses

from beam_jobs.errors import UserError

HEADS = ("softmax", "hidden")
TFRECORD, PARQUET = "tfrecord", "parquet"
INPUT_FORMATS = (TFRECORD, PARQUET)
CLASS_WEIGHTS = ("none", "balanced")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run; a fixed `seed` makes the run repeatable."""

    head: str = "softmax"  # "softmax": z-score → Dense softmax; "hidden": + one ReLU layer
    hidden_units: int = 256
    dropout: float = 0.2
    l2: float = 1e-4
    learning_rate: float = 1e-3
    batch_size: int = 64
    epochs: int = 50  # a maximum: early stopping usually ends training well before
    patience: int = 5
    seed: int | None = 42  # None: faster non-deterministic input order, unrepeatable metrics
    shuffle_buffer: int = 10_000  # ≥ a few thousand examples means a full shuffle
    label_smoothing: float = 0.0
    class_weights: str = "none"  # "balanced": weight n / (C · n_c), for imbalanced train splits
    input_format: str = TFRECORD  # which shards to stream: the TFRecords or the Parquet copy
    top_k: int = 5  # metrics.json reports top-1 … top-k accuracy (k capped at the class count)

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise UserError(f"Unknown head {self.head!r}: use one of {', '.join(HEADS)}.")
        if self.class_weights not in CLASS_WEIGHTS:
            raise UserError(f"Unknown --class_weights {self.class_weights!r}: use one of "
                            f"{', '.join(CLASS_WEIGHTS)}.")
        if self.input_format not in INPUT_FORMATS:
            raise UserError(f"Unknown --format {self.input_format!r}: use one of "
                            f"{', '.join(INPUT_FORMATS)}.")
        positive = {"hidden_units": self.hidden_units, "learning_rate": self.learning_rate,
                    "batch_size": self.batch_size, "epochs": self.epochs,
                    "shuffle_buffer": self.shuffle_buffer, "top_k": self.top_k}
        for name, value in positive.items():
            if value <= 0:
                raise UserError(f"--{name} must be positive, got {value}.")
        if self.patience < 0 or self.l2 < 0:
            raise UserError("--patience and --l2 must not be negative.")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.label_smoothing < 1.0:
            raise UserError("--dropout and --label_smoothing must lie in [0, 1).")
