"""`tv-train`: fit a head on committed runs, keep the best epoch, evaluate on test, export.

    tv-train --data=DIR --model_dir=DIR [--head=softmax|hidden] [--epochs N] ...

Everything a Keras callback already does (early stopping with best-weight restore, best
checkpoint, TensorBoard, CSV log) is done by that callback.  A fixed `--seed` seeds Python,
NumPy, TensorFlow and the input order, so the same seed gives the same metrics twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Optional, Sequence

import keras

from beam_jobs import backbones
from beam_jobs.cli import flags
from beam_jobs.cli.errors import UserError
from trainer.serve.export import SERVING_DIR, export_serving
from trainer.train import evaluate
from trainer.train.config import CLASS_WEIGHTS, HEADS, INPUT_FORMATS, TrainConfig
from trainer.train.data.dataset import (
    TrainingData,
    exclude_images,
    open_training_data,
)
from trainer.train.data.split_cache import SplitCache
from trainer.train.data.transform import load_transform
from trainer.train.data.views import check_mirrored
from trainer.train.fit import HEAD_FILE, fit
from trainer.uncertainty.assess import Uncertainty, describe_training_data

EXAMPLE = """example:
  tv-train --data=/tmp/tv --model_dir=/tmp/model --head=hidden --epochs=30
  tv-train --config=train.yaml --learning_rate=0.0005   # flags override the file"""


def train(config: TrainConfig, data: str, model_dir: str, *, verbose: int = 0,
          export: bool = True, exclude: Optional[str] = None, tune: int = 0) -> dict:
    """Train, evaluate and (unless `export=False`) export; returns the metrics.json content.

    `exclude`: a file of images to leave out (trainer.train.data.exclude: an audit CSV or a list of
    uris / image_ids); metrics.json and the report say how many were left out per split.
    `tune`: first search that many head configurations (trainer.train.tune), then train the best.
    """
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    training_data = open_training_data(data)
    if exclude:
        from trainer.train.data.exclude import read_exclusions

        training_data = exclude_images(training_data, read_exclusions(exclude), data)
    if config.tta:  # refused now, not after training
        check_mirrored(training_data.runs, data)
    backbone = serving_backbone(training_data) if export else None
    os.makedirs(model_dir, exist_ok=True)
    transform = load_transform(training_data.runs)
    cache, tuning = None, None
    if tune > 0:  # the trials and the refit of the winner share one read of the splits
        from trainer.train import tune as head_search

        cache = SplitCache(training_data, config, transform)
        tuning = head_search.search(config, training_data, cache, model_dir, tune, verbose)
        config = tuning.config
    model, history = fit(config, training_data, model_dir, verbose, transform, cache=cache)
    model.save(os.path.join(model_dir, HEAD_FILE))
    description, known = None, {}
    if backbone is not None:  # only an export serves ood_score
        description, known["ood"] = describe_training_data(
            evaluate.split_transfer_values(training_data, config), config.seed or 0)
    metrics, temperature = evaluate.evaluate(model, training_data, config, model_dir, history,
                                             transform, known)
    if tuning is not None:
        metrics = head_search.record(tuning, metrics, model_dir)
    if backbone is not None:
        export_serving(model, backbone, training_data.labels, os.path.join(model_dir, SERVING_DIR),
                       transform=transform, resize_policy=training_data.resize_policy,
                       jpeg_factor=training_data.jpeg_factor, tta=config.tta,
                       uncertainty=Uncertainty(temperature, description))
    return metrics


def serving_backbone(training_data: TrainingData) -> backbones.Backbone:
    """The runs' backbone, loaded before training so a mismatch costs no training time."""
    backbone = backbones.load(training_data.backbone_handle)
    if backbone.fingerprint != training_data.fingerprint:
        raise UserError(f"The backbone {training_data.backbone_handle!r} now has fingerprint "
                        f"{backbone.fingerprint}, but the runs were extracted with "
                        f"{training_data.fingerprint}; re-extract before training.")
    return backbone


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = TrainConfig()
    parser = flags.argument_parser("tv-train", __doc__.split("\n")[0], EXAMPLE)
    parser.add_argument("--data", required=True,
                        help="a committed run folder, or an extract output holding runs/")
    parser.add_argument("--model_dir", required=True, help="where checkpoints, metrics, plots "
                        "and the serving export go")
    parser.add_argument("--head", choices=HEADS, default=defaults.head)
    parser.add_argument("--format", dest="input_format", choices=INPUT_FORMATS,
                        default=defaults.input_format, help="which shards to stream")
    parser.add_argument("--class_weights", choices=CLASS_WEIGHTS, default=defaults.class_weights,
                        help="balanced: weight classes by n / (C * n_c) for imbalanced data")
    for name in ("epochs", "batch_size", "patience", "seed", "hidden_units", "hidden_layers",
                 "top_k"):
        parser.add_argument(f"--{name}", type=int, default=getattr(defaults, name))
    for name in ("learning_rate", "dropout", "l2", "label_smoothing"):
        parser.add_argument(f"--{name}", type=float, default=getattr(defaults, name))
    parser.add_argument("--exclude", default=None, metavar="FILE",
                        help="leave out these images: a tv-audit CSV (flagged rows; for "
                        "near_duplicates.csv every pair's copy uri_b) or a list of uris/image_ids")
    parser.add_argument("--tune", type=int, default=0, metavar="N",
                        help="search N head configurations (depth, width, dropout, L2, learning "
                        "rate, label smoothing, batch size; these flags are then ignored) with "
                        "KerasTuner and keep the best on validation; see tuning.csv")
    parser.add_argument("--tta", action="store_true", default=defaults.tta,
                        help="test-time augmentation: evaluate and serve the mean of each "
                        "image's and its mirror's probabilities (runs extracted with "
                        "--mirror_views)")
    parser.add_argument("--verbose", action="store_true", help="log progress; show tracebacks")
    return flags.parse_args(parser, argv)  # also reads --config=FILE.yaml; flags override it


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the flags describe (each flag is named after its field)."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})


def run(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    config = config_from_args(args)
    if not os.path.exists(args.data) and "://" not in args.data:
        raise UserError(f"--data {args.data} does not exist.")
    if args.tune < 0:
        raise UserError(f"--tune must not be negative, got {args.tune}.")
    flags.check_writable(args.model_dir, "--model_dir")  # fail now, not after training
    metrics = train(config, args.data, args.model_dir, verbose=2, exclude=args.exclude,
                    tune=args.tune)
    if "excluded" in metrics:
        print(f"excluded {metrics['excluded']['images']} images listed in {args.exclude}")
    print(f"test accuracy: {metrics['test_accuracy']:.4f} "
          f"(validation {metrics['validation_accuracy']:.4f})")
    calibration = metrics["calibration"]
    print(f"calibration: temperature {calibration['temperature']:.3f}, test ECE "
          f"{calibration['ece_uncalibrated']:.4f} -> {calibration['ece']:.4f}")
    print(f"outputs: {os.path.abspath(args.model_dir)} "
          f"(serving model: {os.path.join(os.path.abspath(args.model_dir), SERVING_DIR)})")
    return metrics
