"""Decode and resize images the same way in the extract job and in the serving model.

The resize is written in TensorFlow ops so that the Beam workers (eagerly, per image) and the
exported serving graph run the very same arithmetic: any difference here would be a
training/serving skew that no accuracy metric on cached transfer values could reveal.
"""

from __future__ import annotations

import functools
import io
from typing import Any

import numpy as np

RESIZE_METHOD = "bilinear"
RESIZE_POLICY = "squash"  # the default: the whole image is scaled to S×S, aspect ratio not kept
# squash: scale to S×S; crop: centre square of side min(H, W), then scale (edges lost);
# pad: centre the image on a black square of side max(H, W), then scale (nothing lost).
RESIZE_POLICIES = ("squash", "crop", "pad")


class DecodeError(Exception):
    """An input that is not a usable image; `reason` is a dead-letter reason code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def resize_to_square(images, size: int, policy: str = RESIZE_POLICY):
    """uint8 [H,W,C] or [N,H,W,C] (C = 1 or 3) → uint8 [..., size, size, 3]; a TF op.

    Antialiased bilinear, then rounded: keeping uint8 between stages halves the bytes that
    move between Beam stages and matches what a decoder hands the serving graph.  `policy`
    (one of RESIZE_POLICIES) is recorded in the run's manifest as `options.resize.policy`;
    the serving export must pass the same one.
    """
    import tensorflow as tf

    images = _make_square(tf.convert_to_tensor(images), policy)
    square = tf.cast(images, tf.float32)
    shape = tf.shape(square)
    enlarging = tf.logical_and(shape[-3] <= size, shape[-2] <= size)
    # Antialiasing only widens the kernel when shrinking; when enlarging (28x28 Fashion-MNIST
    # to 224) plain bilinear is the same filter at 40 % of the cost; float rounding may move a
    # few pixels by one level (tests/test_decode.py).  Serving runs this same function.
    resized = tf.cond(
        enlarging,
        lambda: tf.image.resize(square, [size, size], method=RESIZE_METHOD, antialias=False),
        lambda: tf.image.resize(square, [size, size], method=RESIZE_METHOD, antialias=True))
    pixels = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
    if images.shape[-1] == 1:  # after the resize: a third of the work, the same pixels
        pixels = tf.image.grayscale_to_rgb(pixels)
    return pixels


def _make_square(images, policy: str):
    """Centre-crop or pad to a square (dynamic shapes work: the serving graph has them)."""
    import tensorflow as tf

    if policy == "squash":
        return images
    shape = tf.shape(images)
    height, width = shape[-3], shape[-2]
    if policy == "crop":
        side = tf.minimum(height, width)
        return tf.image.crop_to_bounding_box(images, (height - side) // 2,
                                             (width - side) // 2, side, side)
    if policy == "pad":
        side = tf.maximum(height, width)
        return tf.image.pad_to_bounding_box(images, (side - height) // 2,
                                            (side - width) // 2, side, side)
    raise ValueError(f"Unknown resize policy {policy!r}: use one of {RESIZE_POLICIES}.")


# Leading bytes of the formats we accept: bytes that start like one of these but cannot be
# opened were cut short (truncated); anything else is not an image at all.
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"II*\x00",
               b"MM\x00*", b"BM", b"RIFF")


# JPEGs are decoded in the DCT domain at the smallest of 1/1, 1/2, 1/4, 1/8 scale that keeps
# both sides at least DRAFT_FACTOR x the backbone's input side (Pillow's `draft`, libjpeg's
# scale_denom); the serving graph mirrors `jpeg_draft_ratio` with `decode_jpeg(ratio=...)`.
# Recorded in the manifest as options.decode.  0 turns the DCT scaling off.
DRAFT_FACTOR = 1


def jpeg_draft_ratio(width: int, height: int, size: int, factor: int = DRAFT_FACTOR) -> int:
    """The DCT scale denominator (1, 2, 4 or 8) for a stored width x height JPEG.

    Pillow's own rule for `draft(mode, (s, s))` with s = factor * size: the largest
    denominator that leaves both sides at least s (integer division, as Pillow does).
    """
    if factor <= 0:
        return 1
    side = size * factor
    scale = min(width // side, height // side)
    for ratio in (8, 4, 2):
        if scale >= ratio:
            return ratio
    return 1


def decode_for_backbone(encoded: bytes, size: int, policy: str = RESIZE_POLICY,
                        max_pixels: int = 89_478_485) -> np.ndarray:
    """Encoded bytes -> uint8 [size, size, 3]: what the extract job feeds the backbone.

    One function for the extract job and `tv-predict`, so both see the same pixels; the
    serving graph's TF decode is tested against it.  Raises `DecodeError`.
    """
    pixels = decode_rgb(encoded, max_pixels, draft_size=size)
    return resize_one(pixels, size, policy)


def travels_at_native_size(shape: tuple[int, ...], size: int) -> bool:
    """Whether the decode stage hands an image on unresized: when neither side exceeds `size`
    (Fashion-MNIST, CIFAR, icons) its native pixels are fewer bytes than the S x S input, and
    the handler enlarges whole batches of them in one graph with the same `resize_to_square`."""
    return shape[0] <= size and shape[1] <= size


def resize_one(pixels: np.ndarray, size: int, policy: str = RESIZE_POLICY) -> np.ndarray:
    """uint8 [H, W, C] -> uint8 [size, size, 3]: `resize_to_square` as one compiled graph."""
    resize = compiled_resize(size, policy, pixels.shape[-1])
    return resize(pixels[np.newaxis]).numpy()[0]


_RESIZERS: dict[tuple[str, int, int], Any] = {}  # per process, built on first use


def compiled_resize(size: int, policy: str, channels: int):
    """`resize_to_square` as one graph per (size, policy, channels), for any image shape.

    The same ops as the serving graph runs, without eager dispatch of each: 1.5x faster on
    500x375 photos, which arrive one shape at a time.  Thread-safe: the decode stage calls it
    from its thread pool (TensorFlow releases the GIL while the ops run).
    """
    key = (policy, size, channels)
    resize = _RESIZERS.get(key)
    if resize is None:
        import tensorflow as tf

        resize = tf.function(functools.partial(resize_to_square, size=size, policy=policy),
                             input_signature=[tf.TensorSpec([None, None, None, channels],
                                                            tf.uint8)],
                             autograph=False)
        resize = _RESIZERS.setdefault(key, resize)
    return resize


def decode_rgb(encoded: bytes, max_pixels: int = 89_478_485,
               draft_size: int = 0) -> np.ndarray:
    """Encoded bytes → uint8 [H, W, 3] RGB, or `DecodeError` with a dead-letter reason.

    Pillow rather than tf.io.decode_image because it reads more formats (CMYK, 16-bit,
    palette) and fails with an exception we can classify instead of a crashed op.  The pixel
    limit is checked on the declared size, before any pixel is decoded (decompression bombs).
    Details are free of object addresses so the same bytes always give the same dead letter.
    """
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    if not encoded:
        raise DecodeError("empty", "zero bytes")
    if max_pixels > (Image.MAX_IMAGE_PIXELS or 0):
        Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's bomb guard must not undercut ours
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(encoded)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise DecodeError("too_large",
                                      f"{width}x{height} exceeds {max_pixels} pixels")
                image.seek(0)  # animations and multi-page files: the first frame
                if draft_size and image.format in ("JPEG", "MPO"):
                    ratio = jpeg_draft_ratio(width, height, draft_size, DRAFT_FACTOR)
                    if ratio > 1:
                        image.draft("RGB", (width // ratio, height // ratio))
                upright = ImageOps.exif_transpose(image)
                return np.asarray(_to_rgb(upright), dtype=np.uint8)
    except DecodeError:
        raise
    except UnidentifiedImageError:
        if encoded.startswith(_SIGNATURES):
            raise DecodeError("truncated", f"starts like an image but its header is cut "
                                           f"short or corrupt ({len(encoded)} bytes)") from None
        raise DecodeError("not_an_image", f"not a known image format; starts with "
                                          f"{encoded[:16]!r}") from None
    except Image.DecompressionBombError as err:
        raise DecodeError("too_large", str(err)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        reason = "truncated" if "truncat" in str(err).lower() else "unreadable"
        raise DecodeError(reason, f"{type(err).__name__}: {err}") from None


def _to_rgb(image):
    """Any Pillow mode → RGB: alpha composited on white, 16-bit scaled down, CMYK converted."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
            image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        array = np.asarray(image, dtype=np.float64)
        # I;16 is 16-bit by definition; Pillow also opens some 16-bit files as 32-bit "I".
        wide = image.mode.startswith("I;16") or array.max(initial=0) > 255
        scaled = array / 257.0 if wide else array
        return Image.fromarray(np.clip(np.round(scaled), 0, 255).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")
