"""The trainer's streamed input against the same data held in memory, in one script.

    python benchmarks/trainer_input.py --n=20000 --dim=1280 --epochs=3

Writes a fake committed run (N examples of D-float transfer values, 4 TFRecord + Parquet
shards per split) and measures the first epoch (streamed from the shards) and the best later
epoch (the parsed split is cached in memory when it fits) of:
(a) baseline: `tf.data.Dataset.from_tensor_slices` over in-memory numpy arrays, shuffled,
    batched, prefetched (the fastest tf.data can hand Keras the same values);
(b) streamed: `trainer.train.data.dataset.dataset(training=True)` over the GZIP TFRecord shards;
(c) streamed: the same over the Parquet shards (`--format=parquet`);
as raw iteration (examples/s of the input alone), and `model.fit` of the softmax head after a
warm-up epoch (examples/s of a training epoch: what the user waits for).
Target: (b)/(a) >= 0.9.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tests.helpers import fake_runs as fx  # noqa: E402
from trainer.train.config import TrainConfig  # noqa: E402
from trainer.train.data.dataset import dataset, open_training_data  # noqa: E402
from trainer.train.heads import build_model  # noqa: E402


def in_memory(training_data, config: TrainConfig) -> tf.data.Dataset:
    """The train split read once into numpy, then served like `trainer.train.data.dataset` serves it."""
    values, labels = zip(*dataset(training_data, "train", config).as_numpy_iterator())
    x, y = np.concatenate(values), np.concatenate(labels)
    return (tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(config.shuffle_buffer, seed=config.seed, reshuffle_each_iteration=True)
            .batch(config.batch_size).prefetch(tf.data.AUTOTUNE))


def iterate_rate(ds: tf.data.Dataset, n: int, epochs: int) -> tuple[float, float]:
    """(first epoch, best later epoch) examples/s: the first streams from the shards, later
    ones are served from the parsed-once cache when the split fits in memory."""
    start = time.perf_counter()
    for _ in ds:
        pass
    first = n / (time.perf_counter() - start)
    best = 0.0
    for _ in range(epochs):
        start = time.perf_counter()
        for _ in ds:
            pass
        best = max(best, n / (time.perf_counter() - start))
    return first, best


def fit_rate(ds: tf.data.Dataset, n: int, epochs: int, config: TrainConfig, dim: int,
             classes: int) -> float:
    model = build_model(config, dim, classes)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(ds, epochs=1, verbose=0)  # warm-up: tracing
    start = time.perf_counter()
    model.fit(ds, epochs=epochs, verbose=0)
    return n * epochs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="train examples")
    parser.add_argument("--dim", type=int, default=1280, help="transfer-value length")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=64)
    args = parser.parse_args()
    classes = ("a", "b", "c", "d", "e", "f", "g", "h", "i", "j")
    per_class = args.n // len(classes)
    n = per_class * len(classes)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        fx.write_run(out, "20240101T000000-a", classes=classes, feature_dim=args.dim, shards=4,
                     per_class={"train": per_class, "validation": 10, "test": 10})
        print(f"wrote {n} x {args.dim} examples in {time.perf_counter() - start:.1f} s; "
              f"load average {os.getloadavg()[0]:.2f}")
        training_data = open_training_data(out)
        config = TrainConfig(batch_size=args.batch_size, seed=1, shuffle_buffer=10_000)
        parquet = dataclasses.replace(config, input_format="parquet")
        sources = {"in-memory numpy (baseline)": in_memory(training_data, config),
                   "streamed TFRecord": dataset(training_data, "train", config, training=True),
                   "streamed Parquet": dataset(training_data, "train", parquet, training=True)}
        rows = []
        for name, ds in sources.items():
            rows.append((name, *iterate_rate(ds, n, args.epochs),
                         fit_rate(ds, n, args.epochs, config, args.dim, len(classes))))
    _, base_cold, base_iter, base_fit = rows[0]
    print(f"{'input':28s} {'1st epoch ex/s':>14s} {'ratio':>6s} {'later ex/s':>11s} "
          f"{'ratio':>6s} {'fit ex/s':>9s} {'ratio':>6s}")
    for name, cold, it, fit in rows:
        print(f"{name:28s} {cold:14,.0f} {cold / base_cold:6.2f} {it:11,.0f} "
              f"{it / base_iter:6.2f} {fit:9,.0f} {fit / base_fit:6.2f}")


if __name__ == "__main__":
    main()
