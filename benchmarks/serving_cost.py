"""What knowing-when-unsure costs the serving model: its size on disk and its latency per image.

    python benchmarks/serving_cost.py --data=/tmp/fm/mirror --model_dir=/tmp/ood/models/Fashion-MNIST

Exports the same trained head twice from a `tv-train` model folder: without the uncertainty
parts (the baseline: the head's own probabilities, no ood_score) and with the temperature and
the gaussian OOD description of the train split (what tv-train now exports).  Prints the
SavedModel sizes and the per-image latency of `serving_pixels` at batch 1 and 64, the two
models called in alternation so machine load hits both alike (median of the rounds).
Target (issue 23): a few MB at most, latency + < 5 %.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


def exports(data: str, model_dir: str, workdir: str):
    """(name → serving dir, the OOD description): the baseline and the full export of the
    same head."""
    import dataclasses

    import keras

    from trainer.serve.export import export_serving
    from trainer.train.command import serving_backbone
    from trainer.train.config import TrainConfig
    from trainer.train.data.dataset import open_training_data
    from trainer.train.data.transform import load_transform
    from trainer.train.evaluate import split_transfer_values
    from trainer.uncertainty.assess import Uncertainty, describe_training_data

    training_data = open_training_data(data)
    transform = load_transform(training_data.runs)
    head = keras.models.load_model(os.path.join(model_dir, "head.keras"), compile=False)
    backbone = serving_backbone(training_data)
    with open(os.path.join(model_dir, "metrics.json")) as f:
        metrics = json.load(f)
    description, _ = describe_training_data(
        split_transfer_values(training_data, TrainConfig(batch_size=1024)), seed=42)
    full = Uncertainty(metrics["calibration"]["temperature"],
                       dataclasses.replace(description, threshold=metrics["ood"]["threshold"]))
    out = {}
    for name, uncertainty in (("before", Uncertainty()), ("after", full)):
        out[name] = export_serving(head, backbone, training_data.labels,
                                   os.path.join(workdir, name, "serving"), transform=transform,
                                   resize_policy=training_data.resize_policy,
                                   jpeg_factor=training_data.jpeg_factor,
                                   uncertainty=uncertainty)
    return out, full.ood


def latency(serving: dict[str, str], batch: int, rounds: int) -> dict[str, float]:
    """Median seconds per image of each model's pixels signature, called in alternation."""
    import tensorflow as tf

    signatures = {name: tf.saved_model.load(path).signatures["serving_pixels"]
                  for name, path in serving.items()}
    pixels = tf.constant(np.random.default_rng(0).integers(0, 256, (batch, 224, 224, 3),
                                                           dtype=np.uint8))
    times: dict[str, list[float]] = {name: [] for name in signatures}
    for signature in signatures.values():  # warm-up: tracing, allocation
        signature(pixels=pixels)
    for _ in range(rounds):
        for name, signature in signatures.items():
            start = time.perf_counter()
            signature(pixels=pixels)["probabilities"].numpy()
            times[name].append((time.perf_counter() - start) / batch)
    return {name: statistics.median(values) for name, values in times.items()}


def ood_part(description, batch: int, rounds: int) -> float:
    """Median seconds per image of the OOD score alone (the graph's added work besides one
    softmax), on random transfer values: free of the backbone's noise on a shared machine."""
    import tensorflow as tf

    from trainer.uncertainty.ood import OodScorer

    scorer = OodScorer(description)
    dim = description.arrays["sample"].shape[1]
    score = tf.function(scorer.__call__, input_signature=[tf.TensorSpec([None, dim])])
    values = tf.constant(np.random.default_rng(1).normal(size=(batch, dim)).astype(np.float32))
    score(values)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        score(values).numpy()
        times.append((time.perf_counter() - start) / batch)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="the extract output the model trained on")
    parser.add_argument("--model_dir", required=True, help="a tv-train --model_dir")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        serving, description = exports(args.data, args.model_dir, workdir)
        sizes = {name: folder_bytes(path) for name, path in serving.items()}
        print(f"serving model size: before {sizes['before'] / 1e6:.2f} MB, after "
              f"{sizes['after'] / 1e6:.2f} MB (+{(sizes['after'] - sizes['before']) / 1e6:.2f} "
              f"MB, {sizes['after'] / sizes['before']:.3f}x)")
        for batch in (1, 64):
            seconds = latency(serving, batch, args.rounds)
            print(f"batch {batch:2d}: before {seconds['before'] * 1e3:.2f} ms/image, after "
                  f"{seconds['after'] * 1e3:.2f} ms/image ({seconds['after'] / seconds['before']:.3f}x,"
                  f" median of {args.rounds} alternating rounds)", flush=True)
            alone = ood_part(description, batch, args.rounds * 5)
            print(f"          the OOD score alone: {alone * 1e3:.3f} ms/image "
                  f"({alone / seconds['before']:.2%} of the whole model's time per image)",
                  flush=True)


if __name__ == "__main__":
    main()
