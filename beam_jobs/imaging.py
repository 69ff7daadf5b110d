"""Decode and resize images the same way in the extract job and in the serving model.

The resize is written in TensorFlow ops so that the Beam workers (eagerly, per image) and the
exported serving graph run the very same arithmetic: any difference here would be a
training/serving skew that no accuracy metric on cached transfer values could reveal.
"""

from __future__ import annotations

import io

import numpy as np

RESIZE_METHOD = "bilinear"
RESIZE_POLICY = "squash"  # the whole image is scaled to S×S, aspect ratio not kept


class DecodeError(Exception):
    """An input that is not a usable image; `reason` is a dead-letter reason code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def resize_to_square(images, size: int):
    """uint8 [H,W,C] or [N,H,W,C] (C = 1 or 3) → uint8 [..., size, size, 3]; a TF op.

    Antialiased bilinear, then rounded: keeping uint8 between stages halves the bytes that
    move between Beam stages and matches what a decoder hands the serving graph.
    """
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    if images.shape[-1] == 1:
        images = tf.image.grayscale_to_rgb(images)
    resized = tf.image.resize(tf.cast(images, tf.float32), [size, size],
                              method=RESIZE_METHOD, antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def decode_rgb(encoded: bytes, max_pixels: int = 89_478_485) -> np.ndarray:
    """Encoded bytes → uint8 [H, W, 3] RGB, or `DecodeError` with a dead-letter reason.

    Pillow rather than tf.io.decode_image because it reads more formats (CMYK, 16-bit,
    palette) and fails with an exception we can classify instead of a crashed op.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not encoded:
        raise DecodeError("empty", "zero bytes")
    try:
        with Image.open(io.BytesIO(encoded)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise DecodeError("too_large", f"{width}x{height} exceeds {max_pixels} pixels")
            image.seek(0)
            image = ImageOps.exif_transpose(image)
            rgb = _to_rgb(image)
            return np.asarray(rgb, dtype=np.uint8)
    except DecodeError:
        raise
    except UnidentifiedImageError as err:
        raise DecodeError("not_an_image", str(err)) from None
    except Image.DecompressionBombError as err:
        raise DecodeError("too_large", str(err)) from None
    except (OSError, SyntaxError, ValueError) as err:
        reason = "truncated" if "truncat" in str(err).lower() else "unreadable"
        raise DecodeError(reason, str(err)) from None


def _to_rgb(image):
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        scale = 255.0 / 65535.0 if array.max() > 255 else 1.0
        return Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")
