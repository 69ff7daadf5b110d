"""The out-of-domain image sets of the OOD benchmark, made offline and extracted like any source.

- digits: scikit-learn's 1,797 handwritten 8×8 scans as PNG class folders (benchmarks/
  head_defaults.py's `make_digits`), which `tv-extract --source=folder:` upscales to the
  backbone's input exactly as it upscales Fashion-MNIST's 28×28 IDX images (the same resize).
- photos: photo-sized JPEGs (640×480 … 1600×1200, quality 90) cut from the real photographs
  scikit-image ships (a cup of coffee, a cat, an astronaut, a rocket, a motorcycle, coins, the
  moon, a retina, textures, a page of text …): random crops at the target aspect, resized, with
  sensor noise (benchmarks/photos_throughput.py's `photo`).

    python benchmarks/ood_sets.py --workdir=/tmp/ood   # makes and extracts both, once
"""

from __future__ import annotations

import argparse
import io
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks.head_defaults import make_digits  # noqa: E402
from benchmarks.photos_throughput import photo  # noqa: E402
from benchmarks.train_rows import extract  # noqa: E402

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "camera", "coins",
          "hubble_deep_field", "immunohistochemistry", "moon", "retina", "brick", "grass",
          "gravel", "clock", "cell", "page", "text")
SIZES = ((640, 480), (1024, 768), (800, 600), (1600, 1200))
PER_PHOTO = 16


def source_photo(name: str) -> np.ndarray:
    """RGB uint8 of one of scikit-image's photographs (grey ones repeated on 3 channels)."""
    import skimage.data

    pixels = getattr(skimage.data, name)()
    pixels = pixels[0] if isinstance(pixels, tuple) else pixels
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    return np.ascontiguousarray(pixels[..., :3]).astype(np.uint8)


def make_photos(folder: str, per_photo: int = PER_PHOTO, seed: int = 0) -> str:
    """`<folder>/<photo>/<i>.jpg`: per_photo crops of every photo in PHOTOS, once."""
    from PIL import Image

    if os.path.isdir(folder):
        return folder
    for p, name in enumerate(PHOTOS):
        base = source_photo(name)
        os.makedirs(os.path.join(folder, name), exist_ok=True)
        for i in range(per_photo):
            rng = np.random.default_rng((seed, p, i))
            width, height = SIZES[i % len(SIZES)]
            buffer = io.BytesIO()
            Image.fromarray(photo(rng, base, width, height)).save(buffer, "JPEG", quality=90)
            with open(os.path.join(folder, name, f"{i:03d}.jpg"), "wb") as f:
                f.write(buffer.getvalue())
    return folder


def extracted_sets(workdir: str, extra: list[str] | None = None) -> dict[str, str]:
    """Make and extract both sets under workdir (reused when already there): name → output."""
    outputs = {"digits": os.path.join(workdir, "digits_run"),
               "photos": os.path.join(workdir, "photos_run")}
    extract(outputs["digits"], [f"--source=folder:{make_digits(os.path.join(workdir, 'digits'))}",
                                "--splits=70,15,15", *(extra or [])])
    extract(outputs["photos"], [f"--source=folder:{make_photos(os.path.join(workdir, 'photos'))}",
                                "--splits=70,15,15", *(extra or [])])
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("extra", nargs="*", help="more tv-extract flags, after --")
    args = parser.parse_args()
    print(extracted_sets(args.workdir, args.extra))


if __name__ == "__main__":
    main()
