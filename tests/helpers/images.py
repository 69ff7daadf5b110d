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
              gz: bool = True, channels: int = 0) -> str:
    """MNIST-style files: `<part>-images-idx3-ubyte[.gz]` and labels, `part` e.g. train/t10k.

    channels=0 writes idx3 [N, H, W]; 1 or 3 writes idx4 [N, H, W, C].
    """
    os.makedirs(directory, exist_ok=True)
    suffix = ".gz" if gz else ""
    for part, count in counts.items():
        labels = np.arange(count) % classes
        offset = 0 if part == "train" else 50_000
        shape = (0, size, size) + ((channels,) if channels else ())
        images = np.zeros(shape, np.uint8) if count == 0 else np.stack(
            [class_image(int(label) % 4, offset + i, size, max(channels, 1))[
                ..., 0 if not channels else slice(None)] for i, label in enumerate(labels)])
        images_kind = "images-idx4" if channels else "images-idx3"
        for kind, array in ((images_kind, images), ("labels-idx1", labels)):
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


# --- hard inputs for the decoding matrix (each a function → encoded bytes) -------------------

def _save(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _gradient(width: int = 24, height: int = 16) -> np.ndarray:
    """An RGB picture whose corners differ, so rotations and crops are visible in tests."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1),
                     np.full_like(x, 90)], axis=-1).astype(np.uint8)


def cmyk_jpeg() -> bytes:
    return _save(Image.fromarray(_gradient()).convert("CMYK"), "JPEG", quality=95)


def png_16bit() -> bytes:
    """16-bit greyscale whose values use the whole 0..65535 range."""
    values = (np.linspace(0, 65535, 24 * 16).reshape(16, 24)).astype(np.uint16)
    return _save(Image.fromarray(values), "PNG")  # uint16 → mode I;16


def palette_png_with_transparency() -> bytes:
    """Palette image whose index 0 is transparent: those pixels must come out white."""
    image = Image.fromarray(_gradient()).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pixels = np.array(image)
    pixels[:4, :4] = 0
    image = Image.fromarray(pixels, mode="P")
    image.putpalette(Image.fromarray(_gradient()).convert(
        "P", palette=Image.Palette.ADAPTIVE, colors=8).getpalette())
    return _save(image, "PNG", transparency=0)


def rgba_png_half_transparent() -> bytes:
    rgba = np.zeros((16, 24, 4), np.uint8)
    rgba[..., 0] = 255  # red, fully transparent left half, opaque right half
    rgba[:, 12:, 3] = 255
    return _save(Image.fromarray(rgba, mode="RGBA"), "PNG")


def exif_rotated_jpeg() -> bytes:
    """A 24×16 (landscape) JPEG whose EXIF orientation 6 says: show it rotated, 16×24."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(Image.fromarray(_gradient()), "JPEG", quality=95, exif=exif.tobytes())


def animated_gif(frames: int = 3) -> bytes:
    images = [Image.fromarray(np.full((16, 24, 3), 60 * i + 30, np.uint8)) for i in range(frames)]
    return _save(images[0], "GIF", save_all=True, append_images=images[1:], duration=50)


def animated_webp(frames: int = 3) -> bytes:
    images = [Image.fromarray(np.full((16, 24, 3), 60 * i + 30, np.uint8)) for i in range(frames)]
    return _save(images[0], "WEBP", save_all=True, append_images=images[1:], lossless=True)


def multipage_tiff(pages: int = 3) -> bytes:
    images = [Image.fromarray(np.full((16, 24, 3), 60 * i + 30, np.uint8)) for i in range(pages)]
    return _save(images[0], "TIFF", save_all=True, append_images=images[1:])


def truncated(encoded: bytes, keep: float = 0.5) -> bytes:
    return encoded[: int(len(encoded) * keep)]


def plain_jpeg() -> bytes:
    return _save(Image.fromarray(_gradient(64, 48)), "JPEG", quality=90)


def plain_png() -> bytes:
    rng = np.random.default_rng(7)  # noisy, so the compressed stream is long enough to cut
    return _save(Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)), "PNG")


def random_bytes(n: int = 4096) -> bytes:
    return np.random.default_rng(3).integers(0, 256, n, dtype=np.uint8).tobytes()


def huge_declared_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid tiny PNG whose header (CRC fixed) declares width × height pixels."""
    import zlib

    data = bytearray(_save(Image.new("L", (8, 8)), "PNG"))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr:ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def photo(width: int, height: int, scene: str = "chelsea") -> np.ndarray:
    """A real photograph (scikit-image's bundled `chelsea`, `coffee`, `astronaut`) resized to
    width × height: edges and texture that flat test colours would not exercise."""
    from skimage import data

    image = Image.fromarray(getattr(data, scene)()).convert("RGB")
    return np.asarray(image.resize((width, height), Image.Resampling.BICUBIC))


def exif_block(orientation: int, big_endian: bool = False, tag_type: int = 3) -> bytes:
    """An APP1 Exif payload ("Exif\\0\\0" + TIFF) whose IFD0 holds ImageWidth, then Orientation."""
    order = ">" if big_endian else "<"
    tiff = (b"MM" if big_endian else b"II") + struct.pack(order + "HI", 42, 8)
    value = (struct.pack(order + "HH", orientation, 0) if tag_type in (3, 8)
             else struct.pack(order + "I", orientation))
    ifd = (struct.pack(order + "H", 2) + struct.pack(order + "HHII", 0x0100, 4, 1, 640)
           + struct.pack(order + "HHI", 0x0112, tag_type, 1) + value + struct.pack(order + "I", 0))
    return b"Exif\x00\x00" + tiff + ifd


def photo_jpeg(width: int, height: int, scene: str = "chelsea", orientation: int = 0,
               big_endian: bool = False, quality: int = 90) -> bytes:
    """A camera-like JPEG; `orientation` 1–8 adds an EXIF Orientation tag (0: no EXIF)."""
    params = {"exif": exif_block(orientation, big_endian)} if orientation else {}
    return _save(Image.fromarray(photo(width, height, scene)), "JPEG", quality=quality, **params)


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>'
HTML_ERROR_PAGE = b"<!DOCTYPE html><html><body><h1>403 Forbidden</h1></body></html>"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


# --- other source kinds ----------------------------------------------------------------------

def write_cifar10(directory: str, counts: dict[str, int], classes: int = 10) -> str:
    """`cifar-10-batches-py/` with the given batches (e.g. data_batch_1, test_batch) + meta."""
    import pickle

    folder = os.path.join(directory, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    for name, count in counts.items():
        labels = [i % classes for i in range(count)]
        offset = 90_000 if name == "test_batch" else 1000 * len(name)
        data = np.stack([class_image(label % 4, offset + i, 32, 3).transpose(2, 0, 1).reshape(-1)
                         for i, label in enumerate(labels)]) if count else np.zeros((0, 3072),
                                                                                    np.uint8)
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"{i}.png".encode() for i in range(count)]}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(batch, f, protocol=2)
    names = [f"class{i}".encode() for i in range(classes)]
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": 10000}, f, protocol=2)
    return directory


def tf_example(features: dict) -> bytes:
    """{key: bytes | int | str} → a serialized tf.train.Example."""
    import tensorflow as tf

    feature = {}
    for key, value in features.items():
        if isinstance(value, int):
            feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        else:
            value = value.encode() if isinstance(value, str) else value
            feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_tfrecord(path: str, examples: list[bytes], gzip_: bool = False) -> str:
    import tensorflow as tf

    options = tf.io.TFRecordOptions(compression_type="GZIP" if gzip_ else "")
    with tf.io.TFRecordWriter(path, options) as writer:
        for example in examples:
            writer.write(example)
    return path


def write_manifest(path: str, rows: list[tuple], header: bool = False) -> str:
    """CSV (`.csv`) or JSONL (`.jsonl`) lines of uri,label[,split]."""
    import json

    with open(path, "w") as f:
        if path.endswith(".jsonl"):
            for row in rows:
                f.write(json.dumps(dict(zip(("uri", "label", "split"), row))) + "\n")
        else:
            if header:
                f.write("uri,label,split\n" if rows and len(rows[0]) == 3 else "uri,label\n")
            for row in rows:
                f.write(",".join(row) + "\n")
    return path
