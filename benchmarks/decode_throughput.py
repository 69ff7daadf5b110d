"""The decode choice: speed and feature parity of JPEG DCT-domain scaling, by factor.

    flock /tmp/tv-heavy.lock python benchmarks/decode_throughput.py --images=120

On the real-looking photo corpus of `photos_throughput.py` (640x480 ... 4032x3024, q90), for
each `imaging.DRAFT_FACTOR` (0 = full decode; f > 0 = the smallest 1/2, 1/4, 1/8 scale leaving
both sides >= f x 224), times `imaging.decode_for_backbone` (Pillow decode + the compiled TF
resize: what the decode stage does per image) on one thread and on all cores, and compares the
EfficientNet-Lite0 port's pooled features (cosine) and ImageNet top-1 class with the full
decode's.  Beside it, the backbone's batched forward on the same cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import photos_throughput  # noqa: E402

FACTORS = (0, 1, 2)


def per_image_ms(fn, items, threads: int) -> float:
    """Wall milliseconds per item of `fn` over `items` on `threads` threads, after a warm-up."""
    fn(items[0])
    with ThreadPoolExecutor(threads) as pool:
        start = time.perf_counter()
        list(pool.map(fn, items))
        return (time.perf_counter() - start) * 1e3 / len(items)


def backbone_ms(backbone, batch: int = 64, batches: int = 4) -> float:
    images = np.random.default_rng(1).integers(
        0, 256, (batch, backbone.image_size, backbone.image_size, 3), dtype=np.uint8)
    backbone(images)
    start = time.perf_counter()
    for _ in range(batches):
        backbone(images)
    return (time.perf_counter() - start) * 1e3 / (batch * batches)


def features_and_classes(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features and ImageNet top-1 classes of the embedded port, uint8 [N,224,224,3]."""
    from beam_jobs.backbones import efficientnet_lite
    from beam_jobs.backbones.pth_reader import read_state_dict

    weights = read_state_dict(efficientnet_lite.weights_path())
    inputs = efficientnet_lite.preprocess(pixels)
    features = efficientnet_lite.build_model(weights)(inputs).numpy()
    logits = efficientnet_lite.build_model(weights, include_top=True)(inputs).numpy()
    return features, logits.argmax(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--corpus", default="/tmp/tv-photos")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from PIL import Image

    from beam_jobs import backbones
    from beam_jobs.images import decode as imaging

    paths = [p for p in photos_throughput.make_corpus(args.corpus, args.images * 12 // 11 + 1)
             if p.endswith(".jpg")][:args.images]
    jpegs = [open(p, "rb").read() for p in paths]
    sizes = sorted({Image.open(p).size for p in paths})
    print(f"{len(jpegs)} JPEGs (sizes {sizes}), mean {np.mean([len(j) for j in jpegs]) / 1e6:.2f}"
          f" MB; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}")
    cores = os.cpu_count() or 1
    pixels, costs = {}, {}
    for factor in FACTORS:
        imaging.DRAFT_FACTOR = factor
        decode = lambda jpeg: imaging.decode_for_backbone(jpeg, 224)  # noqa: E731
        costs[factor] = (per_image_ms(decode, jpegs, 1), per_image_ms(decode, jpegs, cores))
        pixels[factor] = np.stack([decode(j) for j in jpegs])
    model = backbone_ms(backbones.load("efficientnet_lite0"))
    print(f"backbone, batch 64: {model:.1f} ms per image on {cores} cores")
    results = {f: features_and_classes(pixels[f]) for f in FACTORS}
    full_features, full_classes = results[0]
    for factor in FACTORS:
        features, classes = results[factor]
        cosine = np.sum(features * full_features, axis=1) / (
            np.linalg.norm(features, axis=1) * np.linalg.norm(full_features, axis=1))
        level = np.abs(pixels[factor].astype(int) - pixels[0].astype(int)).mean()
        one, many = costs[factor]
        print(f"factor {factor}: decode+resize {one:5.1f} ms/img on 1 thread, {many:5.1f} on "
              f"{cores}; vs full decode: cosine mean {cosine.mean():.4f} min {cosine.min():.4f},"
              f" top-1 agreement {np.mean(classes == full_classes):.3f}, "
              f"mean |pixel diff| {level:.2f}")
    print(f"load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
