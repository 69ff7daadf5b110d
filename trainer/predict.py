"""`tv-predict`: classify image files with an exported model, like TF's label_image.

    tv-predict --model=MODEL_DIR IMAGE... [--top_k=5]

The model is loaded with plain `tf.saved_model.load`, exactly as any client would, so this
command is also the smoke test of an export.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

import numpy as np
import tensorflow as tf

from beam_jobs import cli
from beam_jobs.cli import main
from beam_jobs.errors import UserError
from trainer.export import INPUT_NAME, LABELS_FILE, OUTPUT_PROBABILITIES, SERVING_DIR


EXAMPLE = """example:
  tv-predict --model=/tmp/model --top_k=3 shirt.png boot.jpg"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = cli.argument_parser("tv-predict", __doc__.split("\n")[0], EXAMPLE)
    parser.add_argument("--model", required=True, help="a tv-train --model_dir (holding serving/)")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files to classify")
    parser.add_argument("--top_k", type=int, default=5)
    parser.add_argument("--verbose", action="store_true", help="show tracebacks")
    return cli.parse_args(parser, argv)  # also reads --config=FILE.yaml; flags override it


def read_labels(model_dir: str) -> list[str]:
    with tf.io.gfile.GFile(os.path.join(model_dir, LABELS_FILE)) as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def load_serving(model_dir: str):
    serving_dir = os.path.join(model_dir, SERVING_DIR)
    if not tf.io.gfile.exists(os.path.join(serving_dir, "saved_model.pb")):
        raise UserError(f"No exported model at {serving_dir}: point --model at a tv-train "
                        f"--model_dir whose training finished.")
    return tf.saved_model.load(serving_dir).signatures["serving_default"]


def classify(serve, image_path: str) -> np.ndarray:
    """Probabilities over the classes for one image file."""
    with tf.io.gfile.GFile(image_path, "rb") as f:
        encoded = f.read()
    try:
        out = serve(**{INPUT_NAME: tf.constant([encoded])})
    except tf.errors.InvalidArgumentError:
        raise UserError(f"{image_path} is not an image TensorFlow can decode "
                        f"(JPEG, PNG, GIF or BMP).") from None
    return out[OUTPUT_PROBABILITIES].numpy()[0]


def run(argv: Sequence[str] | None = None) -> dict[str, list[tuple[str, float]]]:
    args = parse_args(argv)
    if args.top_k <= 0:
        raise UserError(f"--top_k must be positive, got {args.top_k}.")
    missing = [path for path in args.images if not tf.io.gfile.exists(path)]
    if missing:
        raise UserError(f"Image file(s) not found: {', '.join(missing)}.")
    serve = load_serving(args.model)
    labels = read_labels(args.model)
    results = {}
    for path in args.images:
        probabilities = classify(serve, path)
        top = np.argsort(-probabilities, kind="stable")[:args.top_k]
        results[path] = [(labels[i], float(probabilities[i])) for i in top]
        print(path)
        for label, probability in results[path]:
            print(f"  {label}: {probability:.5f}")
    return results


def console() -> int:
    """console_scripts entry point: `tv-predict = trainer.predict:console`."""
    return main(run)


if __name__ == "__main__":
    sys.exit(main(run))
