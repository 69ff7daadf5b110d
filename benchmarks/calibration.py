"""Calibration: ECE and NLL on the test split before and after temperature scaling.

    python benchmarks/calibration.py --workdir=/tmp/ood --fashion_mnist=/tmp/fm/mirror \
        [--digits=/tmp/ood_sets/digits_run]

Each row is a real `tv-train` (seed 42; the defaults, or the defaults + `--tta` on a run
extracted with `--mirror_views`), which fits the temperature on the validation split and
records in metrics.json the test split's expected calibration error (15 equal-width bins) and
negative log-likelihood before (T = 1, the head's own softmax) and after.  The "before" column
is the baseline of the same script.  Target (issue 23): ECE <= 0.02 after calibration.
Models go to <workdir>/models/<domain>[ tta], which benchmarks/ood_detection.py reuses.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks.train_rows import train_row  # noqa: E402


def print_row(name: str, metrics: dict, seconds: float, command: str) -> None:
    c = metrics["calibration"]
    print(f"{name:28s} {metrics['counts_total']:>6d} {metrics['test_accuracy']:8.4f} "
          f"{c['temperature']:6.3f} {c['ece_uncalibrated']:8.4f} {c['ece']:8.4f} "
          f"{c['nll_uncalibrated']:8.4f} {c['nll']:8.4f} {c['ece'] / c['ece_uncalibrated']:6.2f}"
          f" {seconds:6.0f}  {command}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--fashion_mnist", required=True,
                        help="a Fashion-MNIST extract output made with --mirror_views")
    parser.add_argument("--digits", default=None, help="a digits extract output (no --tta row)")
    args = parser.parse_args()
    rows = [("Fashion-MNIST: default head", args.fashion_mnist, "Fashion-MNIST", []),
            ("Fashion-MNIST: --tta head", args.fashion_mnist, "Fashion-MNIST tta", ["--tta"])]
    if args.digits:
        rows.append(("digits: default head", args.digits, "digits", []))
    print(f"{'row':28s} {'images':>6s} {'test acc':>8s} {'T':>6s} {'ECE T=1':>8s} "
          f"{'ECE':>8s} {'NLL T=1':>8s} {'NLL':>8s} {'ratio':>6s} {'s':>6s}  command")
    for name, data, folder, flags in rows:
        model_dir = os.path.join(args.workdir, "models", folder)
        result = train_row(data, model_dir, flags)
        metrics = dict(result["metrics"])
        metrics["counts_total"] = sum(sum(c.values()) for c in metrics["counts"].values())
        print_row(name, metrics, result["seconds"], result["command"])


if __name__ == "__main__":
    main()
