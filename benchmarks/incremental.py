"""An incremental run adding 1 % new images vs a full re-extraction of the same collection.

    python benchmarks/incremental.py --n=2000 [--backbone=efficientnet_lite0] [--new_percent=1]

On the first N Fashion-MNIST training images (the t10k part is left out):
(0) setup, not compared: a full extraction of N images into OUT_A;
(a) incremental: `tv-extract --incremental` of the first N + N·p/100 images into OUT_A, which
    extracts only the new ones (and reads the image_id/label columns of the earlier run);
(b) baseline: a full extraction of the same N + N·p/100 images into a fresh OUT_B.
Both are timed by the job's own `durations.total_s` and by the wall clock of the call (in
this process, so imports are paid once, before either).  Prints (b)/(a).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from beam_jobs.extract import pipeline as extract

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
LABELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples",
                      "fashion_mnist_labels.txt")


def _extract(output: str, n: int, backbone: str, *extra: str) -> tuple[dict, float]:
    started = time.perf_counter()
    manifest = extract.run([f"--source=idx:{FASHION_MNIST}", f"--output={output}",
                            f"--backbone={backbone}", f"--limit=train={n},test=0",
                            f"--label_names={LABELS}", "--num_shards=2", *extra])
    return manifest, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--new_percent", type=float, default=1.0)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    args = parser.parse_args()
    grown = args.n + max(1, round(args.n * args.new_percent / 100))
    with tempfile.TemporaryDirectory(prefix="tv-bench-incremental-") as tmp:
        out_a, out_b = os.path.join(tmp, "a"), os.path.join(tmp, "b")
        _, base_s = _extract(out_a, args.n, args.backbone)
        delta, delta_s = _extract(out_a, grown, args.backbone, "--incremental")
        full, full_s = _extract(out_b, grown, args.backbone)
    assert delta["accepted"] == grown - args.n, delta
    assert full["accepted"] == grown, full
    print(f"\nbackbone {args.backbone}; collection {args.n} -> {grown} images "
          f"(+{grown - args.n}, {args.new_percent:g} %)")
    print(f"  setup full extraction of {args.n}: {base_s:.1f} s wall")
    rows = (("(a) incremental", delta, delta_s), ("(b) full re-extraction", full, full_s))
    for name, manifest, wall in rows:
        print(f"  {name:24s} extracted {manifest['accepted']:5d}  job {manifest['durations']['total_s']:7.1f} s"
              f"  wall {wall:7.1f} s")
    print(f"  speed-up (b)/(a): job {full['durations']['total_s'] / delta['durations']['total_s']:.2f}x"
          f", wall {full_s / delta_s:.2f}x")


if __name__ == "__main__":
    import atexit
    import gc

    atexit.register(gc.freeze)  # the tensorflow-transform exit crash (ENVIRONMENT.md)
    main()
