"""Tiny image collections written by the tests themselves."""

from __future__ import annotations

import gzip
import io
import os
import struct

import numpy as np
from PIL import Image


def class_image(label: int, index: int, size: int = 12, channels: int = 1) -> np.ndarray:
    """A distinct, class-dependent picture: a bright band whose place encodes the label."""
    rng = np.random.default_rng(label * 10_000 + index)
    image = rng.integers(0, 60, size=(size, size, channels), dtype=np.uint8)
    band = slice(label * size // 4, label * size // 4 + size // 4)
    image[band, :, :] = 200 + rng.integers(0, 55, dtype=np.uint8)
    return image


def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(directory: str, counts: dict[str, int], classes: int = 3, size: int = 12,
              gz: bool = True) -> str:
    """MNIST-style files: `<part>-images-idx3-ubyte[.gz]` and labels, `part` e.g. train/t10k."""
    os.makedirs(directory, exist_ok=True)
    suffix = ".gz" if gz else ""
    for part, count in counts.items():
        labels = np.arange(count) % classes
        offset = 0 if part == "train" else 50_000
        images = np.zeros((0, size, size), np.uint8) if count == 0 else np.stack(
            [class_image(int(l), offset + i, size)[..., 0] for i, l in enumerate(labels)])
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            data = _idx_bytes(array)
            with open(os.path.join(directory, f"{part}-{kind}-ubyte{suffix}"), "wb") as f:
                f.write(gzip.compress(data) if gz else data)
    return directory


def png_bytes(image: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image.squeeze() if image.shape[-1] == 1 else image).save(buffer, format=fmt)
    return buffer.getvalue()


def write_folder(root: str, per_class: int, classes: tuple[str, ...] = ("cat", "dog", "owl"),
                 size: int = 12) -> str:
    for label_index, label in enumerate(classes):
        os.makedirs(os.path.join(root, label), exist_ok=True)
        for i in range(per_class):
            image = np.repeat(class_image(label_index, i, size), 3, axis=-1)
            with open(os.path.join(root, label, f"{i:04d}.png"), "wb") as f:
                f.write(png_bytes(image))
    return root
