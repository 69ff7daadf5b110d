"""Shared by the accuracy benchmarks: extract a run once, train one row through `tv-train`.

Every row runs the real command line in a subprocess, so the command printed beside a figure is
exactly what produced it (flags, defaults and all), and rows cannot leak state into each other.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(__file__), "..")


def committed(output: str) -> list[str]:
    """The committed runs under an extract output (a run counts once `_SUCCESS` is there)."""
    return sorted(os.path.dirname(p) for p in glob.glob(os.path.join(output, "runs", "*",
                                                                     "_SUCCESS")))


def extract(output: str, flags: list[str]) -> dict:
    """`tv-extract` into `output` unless a committed run is already there (the slow part).

    Returns what the manifests say: images, records (views included) and the job's seconds.
    """
    if not committed(output):
        command = [sys.executable, "-m", "beam_jobs.extract", f"--output={output}", *flags]
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True, cwd=ROOT)
    images = records = 0
    seconds = 0.0
    for run in committed(output):
        with open(os.path.join(run, "manifest.json")) as f:
            manifest = json.load(f)
        images += sum(sum(c.values()) for c in manifest["counts"].values())
        view_counts = manifest.get("view_counts") or manifest["counts"]
        records += sum(sum(c.values()) for c in view_counts.values())
        seconds += float(manifest.get("durations", {}).get("total_s", 0.0))
    return {"images": images, "records": records, "seconds": seconds}


def train_row(data: str, model_dir: str, flags: list[str]) -> dict:
    """One `tv-train` (no serving export needed for a figure, but it is the real command)."""
    command = [sys.executable, "-m", "trainer.train", f"--data={data}",
               f"--model_dir={model_dir}", "--seed=42", *flags]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    with open(os.path.join(model_dir, "metrics.json")) as f:
        metrics = json.load(f)
    return {"metrics": metrics, "seconds": seconds,
            "command": "tv-train --data=… --model_dir=… --seed=42 " + " ".join(flags)}


def print_row(name: str, val: float | None, test: float, baseline: float, seconds: float,
              command: str = "") -> None:
    val_text = f"{val:8.4f}" if val is not None else f"{'-':>8s}"
    print(f"{name:34s} {val_text} {test:9.4f} {test / baseline:8.3f} {seconds:7.0f}  {command}",
          flush=True)


def print_header() -> None:
    print(f"\n{'row':34s} {'val acc':>8s} {'test acc':>9s} {'vs base':>8s} {'s':>7s}  command",
          flush=True)
