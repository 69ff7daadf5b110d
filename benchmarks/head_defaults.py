"""Which `tv-train` defaults: candidate head configs on two unlike datasets, side by side.

    python benchmarks/head_defaults.py --workdir=/tmp/defaults --fashion_mnist=/tmp/fm/base
    python benchmarks/head_defaults.py --workdir=/tmp/defaults_multi \
        --candidates="softmax (old default),new default (no flags)" \
        -- --backbone=efficientnet_lite0:multi

Defaults tuned on one dataset are tuned to it.  The candidates run on (1) scikit-learn's
handwritten digits (1,797 real 8×8 scans, 10 classes: tiny, far from ImageNet, and mirroring
changes a digit), written as PNG class folders and extracted with `tv-extract
--source=folder:…`; (2) a committed Fashion-MNIST run (all 70,000 images, from
benchmarks/fashion_mnist_accuracy.py) when `--fashion_mnist` names one.  Each row is a real
`tv-train` command; the ratio is against the first candidate (the defaults before issue 15).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks.train_rows import extract, print_header, print_row, train_row  # noqa: E402

CANDIDATES = {  # name → tv-train flags, every hyperparameter spelled out (defaults change)
    "softmax (old default)": ["--head=softmax", "--l2=1e-4", "--learning_rate=1e-3",
                              "--batch_size=64", "--label_smoothing=0", "--patience=5"],
    "softmax + smoothing": ["--head=softmax", "--l2=1e-5", "--learning_rate=1e-3",
                            "--batch_size=128", "--label_smoothing=0.1", "--patience=5"],
    "hidden 1024": ["--head=hidden", "--hidden_units=1024", "--dropout=0.5", "--l2=1e-5",
                    "--learning_rate=1e-3", "--batch_size=128", "--label_smoothing=0",
                    "--patience=6"],
    "hidden 2048 + smoothing": ["--head=hidden", "--hidden_units=2048", "--dropout=0.5",
                                "--l2=1e-5", "--learning_rate=5e-4", "--batch_size=128",
                                "--label_smoothing=0.1", "--patience=6"],
    "hidden 256 (search trial)": ["--head=hidden", "--hidden_units=256", "--dropout=0.3",
                                  "--l2=1e-6", "--learning_rate=2e-3", "--batch_size=256",
                                  "--label_smoothing=0.05", "--patience=5"],
    "hidden 1024 light smoothing": ["--head=hidden", "--hidden_units=1024", "--dropout=0.5",
                                     "--l2=1e-5", "--learning_rate=1e-3", "--batch_size=256",
                                     "--label_smoothing=0.05", "--patience=5"],
    "new default (no flags)": [],
}


def make_digits(folder: str) -> str:
    """scikit-learn's digits as `<folder>/<digit>/<i>.png` (8×8 grayscale, 0..16 → 0..255)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    if not os.path.isdir(folder):
        for i, (image, target) in enumerate(zip(digits.images, digits.target)):
            os.makedirs(os.path.join(folder, str(target)), exist_ok=True)
            pixels = np.round(image * (255.0 / 16.0)).astype(np.uint8)
            Image.fromarray(pixels, "L").save(os.path.join(folder, str(target), f"{i:04d}.png"))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--fashion_mnist", default=None, help="a Fashion-MNIST extract output")
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("extra", nargs="*", help="more tv-extract flags for digits, after --")
    args = parser.parse_args()
    digits = os.path.join(args.workdir, "digits_run")
    info = extract(digits, [f"--source=folder:{make_digits(os.path.join(args.workdir, 'digits'))}",
                            "--splits=70,15,15", *args.extra])
    print(f"digits: {info['images']} images, extraction {info['seconds']:.0f} s")
    datasets = {"digits": digits}
    if args.fashion_mnist:
        datasets["fashion-mnist"] = args.fashion_mnist
    for dataset, data in datasets.items():
        print(f"\n== {dataset} ==")
        print_header()
        first = None
        for name in args.candidates.split(","):
            model_dir = os.path.join(args.workdir, "models", dataset, name.replace(" ", "_"))
            row = train_row(data, model_dir, CANDIDATES[name])
            metrics = row["metrics"]
            first = first or metrics["test_accuracy"]
            print_row(name, metrics["validation_accuracy"], metrics["test_accuracy"], first,
                      row["seconds"], row["command"])


if __name__ == "__main__":
    main()
