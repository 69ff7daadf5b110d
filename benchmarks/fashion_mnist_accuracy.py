"""Test accuracy from the frozen backbone on all 70,000 Fashion-MNIST images (issues 6, 15).

    python benchmarks/fashion_mnist_accuracy.py --workdir=/tmp/fm            # every row
    python benchmarks/fashion_mnist_accuracy.py --workdir=/tmp/fm --rows="views: defaults"
    python benchmarks/fashion_mnist_accuracy.py --workdir=/tmp/fm_small --limit=train=3000,test=1000
    python benchmarks/fashion_mnist_accuracy.py --workdir=/tmp/fms \
        --rows="base: defaults,views: defaults + tta" -- --backbone=efficientnet_lite0:spatial

1. Runs, each extracted once into `<workdir>/<run>` and reused (extraction is the slow part:
   about 8 minutes per 70,000 records on 2 cores): `base` (plain `tv-extract`) and `views`
   (`--augment_views=2 --mirror_views`: two cached augmented views per train image and the
   mirror of every validation/test image for `--tta`).  The source's t10k part is the test
   split; its train part is split 90/10 into train and validation by image hash.
2. Baseline in the same script: scikit-learn logistic regression on the raw 784 pixels of
   exactly the run's train and test rows (no backbone at all).
3. One real `tv-train` command per row (benchmarks/train_rows.py); each prints validation and
   test accuracy, its ratio to the baseline, seconds and the command; a `--tta` row also
   prints the same head without the mirror (training is the same with or without `--tta`,
   so that line is the plain row's figure for the same seed).  Targets (issue 15):
   `views: defaults` >= 0.915, `views: tune 20 + tta` >= 0.93 (measured: BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import atexit
import gc
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
atexit.register(gc.freeze)  # tensorflow-transform's exit crash (see beam_jobs.cli)
from benchmarks.train_rows import extract, print_header, print_row, train_row  # noqa: E402

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
LABELS = os.path.join(os.path.dirname(__file__), "..", "examples", "fashion_mnist_labels.txt")
RUNS = {  # run → tv-extract flags beyond the source
    "base": [],
    "views": ["--augment_views=2", "--mirror_views"],
}
OLD_DEFAULTS = ["--head=softmax", "--l2=1e-4", "--learning_rate=1e-3", "--batch_size=64",
                "--label_smoothing=0", "--patience=5"]
ROWS = {  # name → (run, tv-train flags); the defaults rows pass no flags on purpose
    "base: old defaults": ("base", OLD_DEFAULTS),
    "base: defaults": ("base", []),
    "base: tune 5": ("base", ["--tune=5"]),
    "views: defaults": ("views", []),
    "views: defaults + tta": ("views", ["--tta"]),
    "views: tune 20 + tta": ("views", ["--tune=20", "--epochs=20", "--tta"]),  # epochs: per trial
}


def split_pixels(training_data, split: str):
    """Raw pixels and label ids of a split's rows, found again from their `idx:` uris."""
    import numpy as np

    from trainer.report.thumbnails import ThumbnailLoader
    from trainer.train.config import TrainConfig
    from trainer.train.data.dataset import evaluation_dataset

    loader = ThumbnailLoader(training_data.runs)
    pixels, labels = [], []
    for _, label_ids, uris in evaluation_dataset(training_data, split, TrainConfig(
            batch_size=1024)):
        for uri in uris.numpy():
            pixels.append(loader.load(uri.decode())[..., 0].ravel())
        labels.append(label_ids.numpy())
    return np.stack(pixels).astype("float32") / 255.0, np.concatenate(labels)


def pixel_baseline(training_data) -> float:
    from sklearn.linear_model import LogisticRegression

    x_train, y_train = split_pixels(training_data, "train")
    x_test, y_test = split_pixels(training_data, "test")
    model = LogisticRegression(max_iter=200).fit(x_train, y_train)
    return float(model.score(x_test, y_test))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="extract outputs (kept for reuse)")
    parser.add_argument("--limit", default=None, help="e.g. train=3000,test=1000 (default: all)")
    parser.add_argument("--rows", default=",".join(ROWS), help="which rows, comma-separated")
    parser.add_argument("extra", nargs="*", help="more tv-extract flags, after --")
    args = parser.parse_args()
    rows = args.rows.split(",")
    source = [f"--source=idx:{FASHION_MNIST}", f"--label_names={LABELS}", "--splits=90,10,0",
              *([f"--limit={args.limit}"] if args.limit else []), *args.extra]
    for run in sorted({ROWS[row][0] for row in rows}):
        info = extract(os.path.join(args.workdir, run), source + RUNS[run])
        rate = info["records"] / info["seconds"] if info["seconds"] else float("nan")
        print(f"run {run}: {info['images']} images, {info['records']} records, extraction "
              f"{info['seconds']:.0f} s ({rate:.1f} records/s)", flush=True)

    from trainer.train.data.dataset import open_training_data

    start = time.perf_counter()
    baseline = pixel_baseline(open_training_data(os.path.join(args.workdir, "base")))
    print_header()
    print_row("baseline: pixels, logistic reg.", None, baseline, baseline,
              time.perf_counter() - start)
    for name in rows:
        run, flags = ROWS[name]
        model_dir = os.path.join(args.workdir, "models", name.replace(": ", "_").replace(" ", "_"))
        row = train_row(os.path.join(args.workdir, run), model_dir, flags)
        metrics = row["metrics"]
        print_row(name, metrics["validation_accuracy"], metrics["test_accuracy"], baseline,
                  row["seconds"], row["command"])
        if "without_tta" in metrics:  # the same head on the originals alone (training is alike)
            alone = metrics["without_tta"]
            print_row("  same head without TTA", alone["validation_accuracy"],
                      alone["test_accuracy"], baseline, 0.0)


if __name__ == "__main__":
    main()
