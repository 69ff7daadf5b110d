"""How close the extract job runs to the backbone's own compute limit, on the same images.

    python benchmarks/extract_throughput.py --n=2000 --naive_n=200

(a) ceiling: the backbone's batched forward pass on images already decoded and resized;
(b) naive:   the tutorials' loop, resize one image and `model.predict(img[None])`; and (b0) a
    bare SavedModel call per pre-resized image, the fairest unbatched baseline;
(c) pipeline: `python -m beam_jobs.extract` on the first N Fashion-MNIST training images, end
    to end (read, dedup, split, decode, resize, RunInference, TFRecord + Parquet, commit), once
    per runner mode; its images/s is N over the job's own `durations.total_s`, and the process's
    wall time (imports included) is printed beside it.
Targets on the 2-core machine: (c)/(a) >= 0.85 and (c)/(b) >= 5.  Runs unchanged on a GPU.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
LABELS = os.path.join(os.path.dirname(__file__), "..", "examples", "fashion_mnist_labels.txt")
MODES = {
    "in_process": [],
    "multi_processing": ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
}


def fashion_images(n: int) -> np.ndarray:
    """The first n Fashion-MNIST training images, uint8 [n, 28, 28, 1]."""
    with gzip.open(os.path.join(FASHION_MNIST, "train-images-idx3-ubyte.gz")) as f:
        data = f.read()
    return np.frombuffer(data, np.uint8, offset=16)[:n * 784].reshape(n, 28, 28, 1)


def ceiling(backbone, images: np.ndarray, batch: int) -> float:
    """(a) images/s of batched forward passes on pre-decoded, pre-resized tensors."""
    backbone(images[:batch])  # trace and warm up outside the clock
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        backbone(images[i:i + batch])
    return len(images) / (time.perf_counter() - start)


def bare_loop(backbone, images: np.ndarray) -> float:
    """(b0) images/s of one direct SavedModel call per pre-resized image (no Keras)."""
    backbone(images[:1])
    start = time.perf_counter()
    for image in images:
        backbone(image[None])
    return len(images) / (time.perf_counter() - start)


def tutorial_loop(backbone, originals: np.ndarray) -> float:
    """(b) images/s of the tutorials' loop: resize one image, `model.predict(image[None])`.

    The model is the same SavedModel behind a Keras 3 `TFSMLayer`, as `hub.KerasLayer` is
    used in the TF Hub tutorials; predict's per-call setup is what batching saves.
    """
    import keras

    from beam_jobs.backbones import SIGNATURE_OUTPUT
    from beam_jobs.images.decode import resize_to_square

    size = backbone.image_size
    inputs = keras.Input((size, size, 3), dtype="uint8")
    layer = keras.layers.TFSMLayer(backbone.saved_model_dir, call_endpoint="serving_default")
    model = keras.Model(inputs, layer(inputs)[SIGNATURE_OUTPUT])
    model.predict(resize_to_square(originals[:1], size).numpy(), verbose=0)
    start = time.perf_counter()
    for image in originals:
        model.predict(resize_to_square(image, size).numpy()[None], verbose=0)
    return len(originals) / (time.perf_counter() - start)


def pipeline(n: int, mode: str, args) -> tuple[float, float]:
    """(c) (images/s over the job's total_s, wall seconds of the whole process)."""
    out = tempfile.mkdtemp(prefix="tv-bench-")
    command = [sys.executable, "-m", "beam_jobs.extract", f"--source=idx:{FASHION_MNIST}",
               f"--output={out}", f"--limit=train={n},test=0", f"--label_names={LABELS}",
               f"--backbone={args.backbone}", *MODES[mode], *args.extra]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    manifest_path, = glob.glob(os.path.join(out, "runs", "*", "manifest.json"))
    with open(manifest_path) as f:
        manifest = json.load(f)
    assert manifest["accepted"] + manifest["rejected"] == n, manifest
    subprocess.run(["rm", "-rf", out], check=False)
    return manifest["accepted"] / manifest["durations"]["total_s"], wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="images through the pipeline")
    parser.add_argument("--ceiling_n", type=int, default=1024, help="images for (a)")
    parser.add_argument("--naive_n", type=int, default=200, help="images for (b)")
    parser.add_argument("--batch_size", type=int, default=64, help="batch for (a)")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--modes", default="in_process,multi_processing")
    parser.add_argument("extra", nargs="*", help="more tv-extract flags for (c), after --")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from beam_jobs import backbones
    from beam_jobs.images.decode import resize_to_square

    backbone = backbones.load(args.backbone)
    originals = fashion_images(max(args.ceiling_n, args.naive_n))
    resized = resize_to_square(originals, backbone.image_size).numpy()
    print(f"backbone {backbone.fingerprint}; load average {os.getloadavg()[0]:.2f}")
    a = ceiling(backbone, resized[:args.ceiling_n], args.batch_size)
    print(f"(a)  ceiling, batched forward, batch {args.batch_size}:   {a:8.1f} img/s")
    b0 = bare_loop(backbone, resized[:args.naive_n])
    print(f"(b0) one SavedModel call per image:        {b0:8.1f} img/s")
    b = tutorial_loop(backbone, originals[:args.naive_n])
    print(f"(b)  tutorial loop, predict per image:     {b:8.1f} img/s")
    for mode in args.modes.split(","):
        c, wall = pipeline(args.n, mode, args)
        print(f"(c)  pipeline {mode:16s} N={args.n}: {c:8.1f} img/s "
              f"(wall {wall:.1f} s incl. imports)  (c)/(a) = {c / a:.2f}  "
              f"(c)/(b) = {c / b:.1f}  (c)/(b0) = {c / b0:.1f}")
    print(f"load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
