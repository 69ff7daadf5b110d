"""Peak memory of the extract job as N grows: it must stay bounded (<= 4 GiB) and flat in N.

    python benchmarks/memory.py --n=10000,70000 --backbone=cheap
    python benchmarks/memory.py --n=1000,3000                      # the real default backbone

Runs `python -m beam_jobs.extract` on the first N Fashion-MNIST images (train, then t10k) for
each N and reports (1) the peak of the whole process tree's summed RSS, sampled from /proc every
0.2 s (workers of --direct_running_mode=multi_processing included), and (2) the kernel's
ru_maxrss of the largest child.  `--backbone=cheap` builds a contract SavedModel with the
default's 224 px input and 1280-d output but almost no compute, so 70,000 images take minutes:
the pipeline's own memory (what could grow with N) is the same; the real backbone adds a
constant (its weights and activations), measured separately at small N.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
LABELS = os.path.join(os.path.dirname(__file__), "..", "examples", "fashion_mnist_labels.txt")


def make_cheap_backbone(path: str, size: int = 224, dim: int = 1280) -> str:
    """A contract SavedModel shaped like the default backbone, computing almost nothing."""
    import numpy as np
    import tensorflow as tf

    module = tf.Module()
    module.w = tf.Variable(np.random.default_rng(0).normal(size=(48, dim)).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name="images")])
    def serve(images):
        x = tf.image.resize(tf.cast(images, tf.float32) / 255.0, [4, 4], method="area")
        return {"transfer_values": tf.matmul(tf.reshape(x, [-1, 48]), module.w)}

    module.serve = serve
    tf.saved_model.save(module, path, signatures={"serving_default": serve})
    return path


def tree_rss(pid: int) -> int:
    """Summed resident bytes of `pid` and all its descendants (Linux /proc)."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total


def limit_for(n: int) -> str:
    train = min(n, 60_000)
    return f"train={train},test={n - train}"


def measure(n: int, backbone: str, extra: list[str]) -> tuple[float, float, float]:
    """(peak tree RSS GiB, largest child ru_maxrss GiB, seconds) of one extract run."""
    out = tempfile.mkdtemp(prefix="tv-mem-")
    command = [sys.executable, "-m", "beam_jobs.extract", f"--source=idx:{FASHION_MNIST}",
               f"--output={out}", f"--limit={limit_for(n)}", f"--label_names={LABELS}",
               f"--backbone={backbone}", "--no_progress", *extra]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    peak = 0
    while child.poll() is None:
        peak = max(peak, tree_rss(child.pid))
        time.sleep(0.2)
    elapsed = time.perf_counter() - start
    subprocess.run(["rm", "-rf", out], check=False)
    if child.returncode:
        raise SystemExit(f"extract failed with exit code {child.returncode}")
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    return peak / 2**30, maxrss / 2**30, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", default="10000,70000", help="comma-separated image counts")
    parser.add_argument("--backbone", default="cheap",
                        help="'cheap' (see above) or any --backbone value of tv-extract")
    parser.add_argument("extra", nargs="*", help="more tv-extract flags, after --")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    backbone = args.backbone
    if backbone == "cheap":
        backbone = make_cheap_backbone(os.path.join(tempfile.mkdtemp(), "cheap"))
    print(f"backbone {args.backbone}; load average {os.getloadavg()[0]:.2f}")
    first = None
    for n in (int(x) for x in args.n.split(",")):
        peak, maxrss, seconds = measure(n, backbone, args.extra)
        first = first or peak
        print(f"N={n:6d}: peak tree RSS {peak:5.2f} GiB (x{peak / first:.2f} of the first N), "
              f"ru_maxrss so far {maxrss:5.2f} GiB, {seconds:.0f} s, {n / seconds:.0f} img/s")
    print(f"load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
