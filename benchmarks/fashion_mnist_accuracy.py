"""Test accuracy of the trainer's heads on Fashion-MNIST through the embedded backbone.

    python benchmarks/fashion_mnist_accuracy.py --workdir=/tmp/fmnist            # full 60k/10k
    python benchmarks/fashion_mnist_accuracy.py --workdir=/tmp/fm --limit=train=3000,test=1000

1. `python -m beam_jobs.extract` over the Debian `dataset-fashion-mnist` IDX files (skipped
   when `--workdir` already holds a committed run: extraction is the slow part, ~10 minutes
   for all 70,000 images on 2 cores); the source's t10k part is the test split, its train part
   is split 90/10 into train and validation by image hash.
2. Baseline in the same script: scikit-learn logistic regression on the raw 784 pixels of
   exactly the run's train and test rows (no backbone at all).
3. `trainer.train.train` for each head configuration below; each row prints test accuracy and
   its ratio to the baseline.  Target: >= 0.92 test accuracy (the strongest classic non-deep
   baselines reach about 0.897).
"""

from __future__ import annotations

import argparse
import atexit
import gc
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
atexit.register(gc.freeze)  # tensorflow-transform's exit crash (see beam_jobs.cli)

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
LABELS = os.path.join(os.path.dirname(__file__), "..", "examples", "fashion_mnist_labels.txt")
HEADS = {  # name → TrainConfig fields; the most promising first (rows print as they finish)
    "hidden 1024": dict(head="hidden", hidden_units=1024, dropout=0.5, l2=1e-5,
                        learning_rate=1e-3, batch_size=128, epochs=60, patience=6),
    "softmax": dict(head="softmax", learning_rate=1e-3, batch_size=128, epochs=60,
                    patience=6, l2=0.0),
    "hidden 2048 + smoothing": dict(head="hidden", hidden_units=2048, dropout=0.5, l2=1e-5,
                                    learning_rate=5e-4, batch_size=128, epochs=60, patience=6,
                                    label_smoothing=0.1),
}


def extract(workdir: str, limit: str | None, extra: list[str]) -> float:
    """Run the extract job unless a committed run is already there; returns its seconds."""
    from beam_jobs import runs

    if runs.committed_runs(workdir) if os.path.isdir(os.path.join(workdir, "runs")) else []:
        print(f"reusing the committed run under {workdir}")
        return 0.0
    command = [sys.executable, "-m", "beam_jobs.extract", f"--source=idx:{FASHION_MNIST}",
               f"--output={workdir}", f"--label_names={LABELS}", "--splits=90,10,0",
               *([f"--limit={limit}"] if limit else []), *extra]
    print(" ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def split_pixels(training_data, split: str):
    """Raw pixels and label ids of a split's rows, found again from their `idx:` uris."""
    import numpy as np

    from trainer.config import TrainConfig
    from trainer.data import evaluation_dataset
    from trainer.thumbnails import ThumbnailLoader

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
    parser.add_argument("--workdir", required=True, help="extract output (kept for reuse)")
    parser.add_argument("--limit", default=None, help="e.g. train=3000,test=1000 (default: all)")
    parser.add_argument("--heads", default=",".join(HEADS), help="which configurations")
    parser.add_argument("extra", nargs="*", help="more tv-extract flags, after --")
    args = parser.parse_args()
    extract_s = extract(args.workdir, args.limit, args.extra)

    from trainer.config import TrainConfig
    from trainer.data import open_training_data
    from trainer.train import train

    training_data = open_training_data(args.workdir)
    counts = {s: sum(training_data.counts(s).values()) for s in ("train", "validation", "test")}
    print(f"run: {counts}, backbone {training_data.fingerprint}, extraction {extract_s:.0f} s")
    print(f"\n{'model':42s} {'val acc':>8s} {'test acc':>9s} {'s':>6s}", flush=True)
    rows = []
    for name in args.heads.split(","):
        start = time.perf_counter()
        model_dir = os.path.join(args.workdir, "models", name.replace(" ", "_"))
        metrics = train(TrainConfig(seed=42, **HEADS[name]), args.workdir, model_dir,
                        export=False)
        rows.append((name, metrics["validation_accuracy"], metrics["test_accuracy"],
                     time.perf_counter() - start))
        print(f"{name:42s} {rows[-1][1]:8.4f} {rows[-1][2]:9.4f} {rows[-1][3]:6.0f}", flush=True)
    start = time.perf_counter()
    baseline = pixel_baseline(training_data)
    rows.insert(0, ("baseline: logistic regression on pixels", None, baseline,
                    time.perf_counter() - start))
    print(f"\n{'model':42s} {'val acc':>8s} {'test acc':>9s} {'vs baseline':>12s} {'s':>6s}")
    for name, val, test, seconds in rows:
        val_text = f"{val:8.4f}" if val is not None else f"{'-':>8s}"
        print(f"{name:42s} {val_text} {test:9.4f} {test / baseline:12.3f} {seconds:6.0f}")

if __name__ == "__main__":
    main()
