"""Is decoding ever the bottleneck?  Decode + resize images/s on photo-sized JPEGs vs the backbone.

    python benchmarks/decode_throughput.py --images=200

Makes photo-like 500x375 JPEGs (smooth gradients, shapes, sensor noise; quality 90, ~60 KB),
then times, on one thread of this process, what the pipeline does per image: the DecodeImages
stage (`imaging.decode_rgb`, Pillow) and the handler's resize to the backbone's square input
(`BackboneModelHandler.resize_batch`: one compiled resize per distinct shape, so here per image,
as real photos differ; the eager `imaging.resize_to_square` it replaced is timed beside it).
Beside it, the backbone's batched forward on the same cores.  Target: decode + resize >= 5x the
backbone's images/s.
"""

from __future__ import annotations

import argparse
import io
import os
import time

import numpy as np

WIDTH, HEIGHT = 500, 375


def photo_like_jpegs(count: int, seed: int = 0) -> list[bytes]:
    """JPEGs whose entropy resembles photos': gradients, a few shapes, per-pixel noise."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    out = []
    for _ in range(count):
        base = np.stack([(x * rng.uniform(0.1, 0.5) + y * rng.uniform(0.1, 0.5)
                          + rng.uniform(0, 120)) % 256 for _ in range(3)], axis=-1)
        noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        image = Image.fromarray(noisy)
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x0, y0 = int(rng.integers(0, WIDTH - 60)), int(rng.integers(0, HEIGHT - 60))
            box = [x0, y0, x0 + int(rng.integers(30, 200)), y0 + int(rng.integers(30, 150))]
            draw.ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def timed(fn, items) -> float:
    """images/s of `fn` over `items`, after one warm-up call."""
    fn(items[0])
    start = time.perf_counter()
    for item in items:
        fn(item)
    return len(items) / (time.perf_counter() - start)


def threaded(fn, items, threads: int) -> float:
    """images/s of `fn` over `items` spread over `threads` threads, after a warm-up call."""
    from concurrent.futures import ThreadPoolExecutor

    fn(items[0])
    with ThreadPoolExecutor(threads) as pool:
        start = time.perf_counter()
        list(pool.map(fn, items))
        return len(items) / (time.perf_counter() - start)


def backbone_rate(backbone, batch: int, batches: int = 8) -> float:
    images = np.random.default_rng(1).integers(
        0, 256, (batch, backbone.image_size, backbone.image_size, 3), dtype=np.uint8)
    backbone(images)
    start = time.perf_counter()
    for _ in range(batches):
        backbone(images)
    return batch * batches / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--batch_size", type=int, default=64)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from beam_jobs import backbones
    from beam_jobs.imaging import decode_rgb, resize_to_square
    from beam_jobs.inference import BackboneModelHandler

    backbone = backbones.load(args.backbone)
    size = backbone.image_size
    jpegs = photo_like_jpegs(args.images)
    print(f"{len(jpegs)} JPEGs {WIDTH}x{HEIGHT}, mean {np.mean([len(j) for j in jpegs]) / 1e3:.0f}"
          f" KB; backbone {backbone.fingerprint}; load average {os.getloadavg()[0]:.2f}")
    decode = timed(decode_rgb, jpegs)
    print(f"decode (Pillow):              {decode:8.1f} img/s")
    decoded = [decode_rgb(j) for j in jpegs]
    eager = timed(lambda image: resize_to_square(image[None], size).numpy(), decoded)
    print(f"resize to {size}, eager ops:      {eager:8.1f} img/s  (before)")
    handler = BackboneModelHandler(backbone)
    resize = timed(lambda image: handler.resize_batch([image]), decoded)
    print(f"resize to {size}, as the handler: {resize:8.1f} img/s  (one graph per shape)")
    both = 1.0 / (1.0 / decode + 1.0 / resize)
    cores = os.cpu_count() or 1
    parallel = threaded(lambda jpeg: handler.resize_batch([decode_rgb(jpeg)]), jpegs, cores)
    model = backbone_rate(backbone, args.batch_size)
    print(f"decode + resize, one thread:  {both:8.1f} img/s")
    print(f"decode + resize, {cores} threads:   {parallel:8.1f} img/s  (the backbone's cores; "
          f"Pillow and TF release the GIL)")
    print(f"backbone, batch {args.batch_size}:           {model:8.1f} img/s  (TF's threads on "
          f"{cores} cores)")
    print(f"(decode + resize) / backbone = {both / model:.1f}x on one thread, "
          f"{parallel / model:.1f}x on {cores} (target >= 5x); "
          f"load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
