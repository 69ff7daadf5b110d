"""Planted copies for benchmarks/audit_duplicates.py: three collections, seven kinds of copy.

What people duplicate, one family each (parameters drawn per copy from a seeded generator):

| family | eval copies | tune copies |
|---|---|---|
| `scale_down` | × 0.6–0.9 | × 0.80 |
| `scale_up` | × 1.1–2.0 | × 1.25 |
| `jpeg` | re-encoded at quality 60–95 | quality 70 or 85 |
| `crop` | 1–6 % cut from each side | (held out) |
| `border` | a solid 3–10 % frame (black, white, grey or a colour) | (held out) |
| `brightness` | × 0.7–0.9 or × 1.1–1.4 (clipped) | (held out) |
| `format` | saved as WebP (q80), GIF, BMP or TIFF | (held out) |

A copy keeps its original's format (PNG for the small images, JPEG q90 for the photos) unless
its family changes it.  The threshold is chosen on the *tune* copies only (a separate set of
Fashion-MNIST originals, three families, parameter values the eval copies never use); every
figure is measured on the *eval* copies of three collections made differently:
- `fashion`: Fashion-MNIST rows read by the `idx:` source (uris `idx:train#n`; the tune
  originals are `idx:t10k#n`), copies as files in a second run;
- `digits`: scikit-learn's 8×8 digits, upscaled to 32 px (bilinear) and written as PNG files;
- `photos`: photo-sized JPEGs (short side 320–480 px) cut from the photos scikit-image ships,
  crops of one photo overlapping by at most a third (look-alikes that are not copies).
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.join(os.path.dirname(__file__), "..")
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
LABELS = os.path.join(ROOT, "examples", "fashion_mnist_labels.txt")
TV_EXTRACT = ["nice", "-n", "10", sys.executable, "-m", "beam_jobs.extract", "--no_progress"]
FAMILIES = ("scale_down", "scale_up", "jpeg", "crop", "border", "brightness", "format")
TUNE_FAMILIES = ("scale_down", "scale_up", "jpeg")
PHOTOS = ("astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins", "grass",
          "gravel", "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina",
          "rocket", "stereo_motorcycle", "text")


def _encode(image, fmt: str) -> tuple[bytes, str]:
    """(bytes, extension) of a PIL image in `fmt` (JPEG:q, PNG, WEBP, GIF, BMP, TIFF)."""
    name, _, quality = fmt.partition(":")
    buffer = io.BytesIO()
    if name in ("JPEG", "WEBP"):
        image.convert("RGB" if image.mode not in ("L", "RGB") else image.mode).save(
            buffer, format=name, quality=int(quality or 90))
    else:
        image.save(buffer, format=name)
    return buffer.getvalue(), {"JPEG": "jpg", "TIFF": "tif"}.get(name, name.lower())


def _scaled(image, factor: float):
    from PIL import Image

    size = (max(4, round(image.width * factor)), max(4, round(image.height * factor)))
    return image.resize(size, Image.LANCZOS if factor < 1 else Image.BICUBIC)


def transformed(image, family: str, role: str, rng: np.random.Generator, fmt: str):
    """(bytes, extension, parameter) of one copy of `image` (a PIL image) of `family`."""
    from PIL import ImageEnhance, ImageOps

    tune = role == "tune"
    if family == "scale_down":
        factor = 0.8 if tune else rng.uniform(0.6, 0.9)
        return (*_encode(_scaled(image, factor), fmt), f"x{factor:.2f}")
    if family == "scale_up":
        factor = 1.25 if tune else rng.uniform(1.1, 2.0)
        return (*_encode(_scaled(image, factor), fmt), f"x{factor:.2f}")
    if family == "jpeg":
        quality = int(rng.choice([70, 85])) if tune else int(rng.integers(60, 96))
        return (*_encode(image, f"JPEG:{quality}"), f"q{quality}")
    if family == "crop":
        cut = rng.uniform(0.01, 0.06, 4)
        w, h = image.size
        box = (round(cut[0] * w), round(cut[1] * h), w - round(cut[2] * w), h - round(cut[3] * h))
        return (*_encode(image.crop(box), fmt), f"{cut.sum() / 2:.3f}")
    if family == "border":
        share = rng.uniform(0.03, 0.10)
        colour = [(0, 0, 0), (255, 255, 255), (128, 128, 128),
                  tuple(int(c) for c in rng.integers(0, 256, 3))][rng.integers(4)]
        framed = ImageOps.expand(image.convert("RGB"), round(share * max(image.size)), colour)
        return (*_encode(framed.convert(image.mode), fmt), f"{share:.3f}")
    if family == "brightness":
        factor = rng.uniform(0.7, 0.9) if rng.random() < 0.5 else rng.uniform(1.1, 1.4)
        return (*_encode(ImageEnhance.Brightness(image).enhance(factor), fmt), f"x{factor:.2f}")
    if family == "format":
        target = str(rng.choice(["WEBP:80", "GIF", "BMP", "TIFF"]))
        source = image.convert("RGB").quantize(256) if target == "GIF" else image
        return (*_encode(source, target), target)
    raise ValueError(family)


def fashion_originals(count: int, part: str, offset: int = 0) -> list[tuple[str, object, str]]:
    """(uri, PIL image, label) of the first `count` rows of an IDX part, as the source names
    them."""
    from PIL import Image

    from beam_jobs.sources.idx import find_parts, read_bytes, read_idx

    images_path, labels_path = find_parts(FASHION_MNIST)[part]
    images, labels = read_idx(read_bytes(images_path)), read_idx(read_bytes(labels_path))
    names = open(LABELS).read().splitlines()
    return [(f"idx:{part}#{i}", Image.fromarray(images[i]), names[int(labels[i])])
            for i in range(offset, offset + count)]


def digits_images() -> list:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.clip(digits.images * 16, 0, 255).astype(np.uint8)
    return [(Image.fromarray(p).resize((32, 32), Image.BILINEAR), str(t))
            for p, t in zip(pixels, digits.target)]


def _iou(a, b) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def photo_crops(per_photo: int, rng: np.random.Generator) -> list:
    """Crops of scikit-image's photos, resized to a short side of 320–480 px."""
    import skimage.data
    from PIL import Image

    out = []
    for name in PHOTOS:
        pixels = getattr(skimage.data, name)()
        pixels = pixels[0] if isinstance(pixels, tuple) else pixels
        photo = Image.fromarray(pixels).convert("RGB")
        boxes: list[tuple[int, int, int, int]] = []
        for _ in range(200):
            if len(boxes) == per_photo:
                break
            side = rng.uniform(0.35, 0.6) * min(photo.size)
            w, h = side * rng.uniform(0.8, 1.25), side
            x, y = rng.uniform(0, photo.width - w), rng.uniform(0, photo.height - h)
            box = (round(x), round(y), round(x + w), round(y + h))
            if all(_iou(box, other) < 1 / 3 for other in boxes):
                boxes.append(box)
        for box in boxes:
            crop = photo.crop(box)
            short = rng.uniform(320, 480)
            factor = short / min(crop.size)
            out.append((crop.resize((round(crop.width * factor), round(crop.height * factor)),
                                    Image.LANCZOS), name))
    return out


def _write(folder: str, stem: str, data: bytes, ext: str) -> str:
    path = os.path.abspath(os.path.join(folder, f"{stem}.{ext}"))
    with open(path, "wb") as f:
        f.write(data)
    return path


def plant(originals: list[tuple[str, object, str]], families, per_family: int, role: str,
          folder: str, fmt: str, rng: np.random.Generator, dataset: str):
    """Copies of distinct originals, `per_family` per family: (manifest rows, pairs)."""
    chosen = rng.choice(len(originals), per_family * len(families), replace=False)
    rows, pairs = [], []
    for n, index in enumerate(chosen):
        family = families[n // per_family]
        uri, image, label = originals[index]
        data, ext, param = transformed(image, family, role, rng, fmt)
        path = _write(folder, f"{role}-{family}-{index}", data, ext)
        rows.append((path, label, str(rng.choice(["train", "test"]))))
        pairs.append({"dataset": dataset, "role": role, "family": family, "param": param,
                      "copy": path, "original": uri})
    return rows, pairs


def _manifest(folder: str, rows) -> str:
    path = os.path.join(folder, "manifest.csv")
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([("uri", "label", "split"), *rows])
    return path


def _extract(source: str, output: str, *flags: str) -> None:
    subprocess.run(TV_EXTRACT + [f"--source={source}", f"--output={output}", *flags],
                   check=True, cwd=ROOT)


def _as_files(folder: str, images, fmt: str, stem: str) -> list[tuple[str, object, str]]:
    out = []
    for n, (image, label) in enumerate(images):
        data, ext = _encode(image, fmt)
        out.append((_write(folder, f"{stem}-{n:05d}", data, ext), image, label))
    return out


def build(cache: str, fashion: int = 2000, tune: int = 1500, per_family: int = 100,
          photo_crops_each: int = 14, seed: int = 0) -> list[dict]:
    """Extract the three collections (cached); returns every planted pair."""
    pairs_file = os.path.join(cache, "pairs.json")
    if os.path.exists(pairs_file):
        with open(pairs_file) as f:
            return json.load(f)
    rng = np.random.default_rng(seed)
    pairs: list[dict] = []
    folder = os.path.join(cache, "fashion-files")
    os.makedirs(folder, exist_ok=True)
    rows, planted = plant(fashion_originals(fashion, "train"), FAMILIES, per_family, "eval",
                          folder, "PNG", rng, "fashion")
    tune_rows, tune_planted = plant(fashion_originals(tune, "t10k"), TUNE_FAMILIES, per_family,
                                    "tune", folder, "PNG", rng, "fashion")
    pairs += planted + tune_planted
    output = os.path.join(cache, "fashion")
    _extract(f"idx:{FASHION_MNIST}", output, f"--label_names={LABELS}",
             f"--limit=train={fashion},test={tune}")
    _extract(f"manifest:{_manifest(folder, rows + tune_rows)}", output)
    for dataset, images, fmt in (("digits", digits_images(), "PNG"),
                                 ("photos", photo_crops(photo_crops_each, rng), "JPEG:90")):
        folder = os.path.join(cache, f"{dataset}-files")
        os.makedirs(folder, exist_ok=True)
        originals = _as_files(folder, images, fmt, "original")
        count = min(per_family, len(originals) // len(FAMILIES))
        rows, planted = plant(originals, FAMILIES, count, "eval", folder, fmt, rng, dataset)
        pairs += planted
        listed = [(uri, label, "") for uri, _, label in originals] + rows
        _extract(f"manifest:{_manifest(folder, listed)}", os.path.join(cache, dataset))
    with open(pairs_file, "w") as f:
        json.dump(pairs, f)
    return pairs


if __name__ == "__main__":
    build(sys.argv[1] if len(sys.argv) > 1 else "/tmp/dup_bench")
