"""The extract job's Pillow decode (`beam_jobs.images.decode.decode_for_backbone`) in TensorFlow ops.

The serving SavedModel must hand its backbone the very pixels the extract job handed it, with
no Python in the graph, so each Pillow step is mirrored here:

- JPEG (CMYK too): decoded in the DCT domain at the scale `beam_jobs.images.decode.jpeg_draft_ratio`
  picks from the *stored* size (Pillow's `draft`), with the accurate integer IDCT, then turned
  upright by the EXIF (or XMP) Orientation tag (`ImageOps.exif_transpose`, after the draft
  decode).  Pixel for pixel equal to Pillow at ratios 1, 2, 4 and 8 (tests/test_serving_decode.py).
- PNG: decoded at 16 bits and narrowed as Pillow does (grey: round(v / 257), colour: high byte),
  so 8- and 16-bit files both agree; transparency composited on white.
- GIF (first frame), BMP, WebP: `tf.io.decode_image`, transparency composited on white.

Not mirrored (send decoded pixels to the `serving_pixels` signature instead): TIFF, GIF
transparency (TF paints it black, Pillow white), animated WebP (TF 2.21 fails on it), and
orientation tags in PNG/WebP EXIF chunks (Pillow honours them, cameras rarely write them).
"""

from __future__ import annotations

import tensorflow as tf

from beam_jobs.images.decode import resize_to_square

ORIENTATION_TAG = 0x0112
_RATIOS = (1, 2, 4, 8)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_HEADER = b"Exif\x00\x00"
_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
_MAX_SEGMENTS = 4096  # marker steps walked before SOS; bounds a corrupt file's cost


def decode_for_serving(image_bytes: tf.Tensor, size: int, policy: str,
                       jpeg_factor: int) -> tf.Tensor:
    """Encoded bytes (scalar) → uint8 [size, size, 3], as `decode_for_backbone` gives them."""
    image = decode_like_pillow(image_bytes, size, jpeg_factor)
    return resize_to_square(image, size, policy=policy)


def decode_like_pillow(image_bytes: tf.Tensor, draft_size: int = 0,
                       jpeg_factor: int = 0) -> tf.Tensor:
    """Encoded bytes → uint8 RGB [H, W, 3], what `beam_jobs.images.decode.decode_rgb(encoded,
    draft_size=draft_size)` returns (EXIF orientation applied), for JPEG, PNG, GIF, BMP, WebP."""
    def jpeg():
        decoded = decode_jpeg_drafted(image_bytes, draft_size, jpeg_factor)
        return apply_orientation(decoded, exif_orientation(image_bytes))

    def png():
        return composite_on_white(_png_like_pillow(image_bytes))

    def animated_webp():
        # TF 2.21 corrupts the heap (the process dies) decoding an animated WebP with
        # channels=0; channels=3 fails cleanly with InvalidArgumentError instead.
        return tf.io.decode_image(image_bytes, channels=3, expand_animations=False)

    def unused_bmp_alpha():
        # A 32-bit BI_RGB bitmap's fourth byte is padding: Pillow reads it as RGB, TF as alpha.
        return tf.io.decode_image(image_bytes, channels=3, expand_animations=False)

    def other():
        return composite_on_white(tf.io.decode_image(image_bytes, channels=0,
                                                     expand_animations=False))

    head = _head(image_bytes, 34)
    is_png = tf.equal(tf.strings.substr(head, 0, len(_PNG_SIGNATURE)), _PNG_SIGNATURE)
    image = tf.case([(tf.io.is_jpeg(image_bytes), jpeg), (is_png, png),
                     (_is_animated_webp(head), animated_webp),
                     (_is_plain_rgb_bmp(head), unused_bmp_alpha)], default=other, exclusive=True)
    image.set_shape([None, None, 3])
    return image


def _head(image_bytes: tf.Tensor, length: int) -> tf.Tensor:
    """The first `length` bytes, zero-padded: fixed offsets can be read without range errors."""
    return tf.strings.substr(tf.strings.join([image_bytes, b"\x00" * length]), 0, length)


def _is_animated_webp(head: tf.Tensor) -> tf.Tensor:
    """True for a WebP whose VP8X header sets the animation flag (RIFF container layout)."""
    riff = tf.equal(tf.strings.substr(head, 0, 4), b"RIFF")
    webp = tf.equal(tf.strings.substr(head, 8, 8), b"WEBPVP8X")
    flags = tf.io.decode_raw(tf.strings.substr(head, 20, 1), tf.uint8)[0]
    animated = tf.not_equal(tf.bitwise.bitwise_and(flags, tf.constant(2, tf.uint8)), 0)
    return tf.logical_and(tf.logical_and(riff, webp), animated)


def _is_plain_rgb_bmp(head: tf.Tensor) -> tf.Tensor:
    """A BMP with BI_RGB compression (no bit masks, so no alpha for Pillow)."""
    bmp = tf.equal(tf.strings.substr(head, 0, 2), b"BM")
    compression = tf.io.decode_raw(tf.strings.substr(head, 30, 4), tf.int32, little_endian=True)
    return tf.logical_and(bmp, tf.equal(compression[0], 0))


def jpeg_ratio_index(image_bytes: tf.Tensor, size: int, factor: int) -> tf.Tensor:
    """Index into (1, 2, 4, 8) of `beam_jobs.images.decode.jpeg_draft_ratio` on the stored size:
    the largest ratio that leaves both sides at least `size * factor` (integer division)."""
    if size <= 0 or factor <= 0:
        return tf.constant(0, tf.int32)
    shape = tf.io.extract_jpeg_shape(image_bytes)
    side = size * factor
    scale = tf.minimum(shape[1] // side, shape[0] // side)
    return tf.add_n([tf.cast(scale >= ratio, tf.int32) for ratio in _RATIOS[1:]])


def decode_jpeg_drafted(image_bytes: tf.Tensor, size: int, factor: int) -> tf.Tensor:
    """JPEG → uint8 [ceil(H/r), ceil(W/r), 3] at the DCT scale r Pillow's `draft` picks.

    `decode_jpeg`'s ratio is an attribute, not a tensor, hence one branch per ratio."""
    def decoder(ratio: int):
        return lambda: tf.io.decode_jpeg(image_bytes, channels=3, ratio=ratio,
                                         dct_method="INTEGER_ACCURATE")

    if size <= 0 or factor <= 0:
        return decoder(1)()
    return tf.switch_case(jpeg_ratio_index(image_bytes, size, factor),
                          [decoder(ratio) for ratio in _RATIOS])


def apply_orientation(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """[H, W, C] stored pixels → upright, for EXIF orientation 1–8 (what
    `ImageOps.exif_transpose` does); any other value leaves the image as it is."""
    def transpose(x):
        return tf.transpose(x, [1, 0, 2])

    branches = [
        lambda: image,                                   # 1: upright
        lambda: tf.reverse(image, [1]),                  # 2: mirrored
        lambda: tf.reverse(image, [0, 1]),               # 3: rotated 180°
        lambda: tf.reverse(image, [0]),                  # 4: flipped
        lambda: transpose(image),                        # 5: transposed
        lambda: tf.reverse(transpose(image), [1]),       # 6: rotate 90° clockwise
        lambda: tf.reverse(transpose(image), [0, 1]),    # 7: transversed
        lambda: tf.reverse(transpose(image), [0]),       # 8: rotate 90° counter-clockwise
    ]
    valid = tf.logical_and(orientation >= 1, orientation <= 8)
    return tf.switch_case(tf.where(valid, orientation - 1, 0), branches)


def exif_orientation(image_bytes: tf.Tensor) -> tf.Tensor:
    """A JPEG's orientation as Pillow's `getexif` reads it: tag 0x0112 of the first APP1 Exif
    segment, else `tiff:Orientation` in the (last) XMP segment; an int32 in 1..8, 1 when
    absent, malformed or out of range."""
    data = tf.io.decode_raw(image_bytes, tf.uint8)
    tiff, xmp_start, xmp_end = _app1_segments(data)
    exif_value, in_exif = tf.cond(
        tiff > 0, lambda: _tiff_orientation(data, tiff),
        lambda: (tf.constant(1, tf.int64), tf.constant(False)))
    orientation = tf.cond(
        tf.logical_and(tf.logical_not(in_exif), xmp_end > xmp_start),
        lambda: _xmp_orientation(image_bytes, xmp_start, xmp_end),
        lambda: exif_value)
    orientation = tf.cast(orientation, tf.int32)
    return tf.where(tf.logical_and(orientation >= 1, orientation <= 8), orientation, 1)


def _xmp_orientation(image_bytes: tf.Tensor, start: tf.Tensor, end: tf.Tensor) -> tf.Tensor:
    """The digit after the first `tiff:Orientation="` or `tiff:Orientation>` (Pillow's regex)."""
    segment = tf.strings.substr(image_bytes, tf.cast(start, tf.int32),
                                tf.cast(end - start, tf.int32))
    found = tf.strings.regex_full_match(segment, r'(?s).*tiff:Orientation(="|>)[0-9].*')
    digit = tf.strings.regex_replace(segment, r'(?s)^.*?tiff:Orientation(?:="|>)([0-9]).*$',
                                     r"\1")
    return tf.cond(found, lambda: tf.strings.to_number(digit, tf.int64),
                   lambda: tf.constant(1, tf.int64))


def _reader(data: tf.Tensor):
    """byte(i) → int64, 0 past either end (reads never fail; callers check bounds)."""
    size = tf.cast(tf.size(data), tf.int64)
    padded = tf.concat([data, tf.zeros([1], tf.uint8)], 0)  # index `size` reads the pad

    def byte(index):
        index = tf.convert_to_tensor(index, tf.int64)
        inside = tf.logical_and(index >= 0, index < size)
        value = tf.gather(padded, tf.clip_by_value(index, 0, size))
        return tf.where(inside, tf.cast(value, tf.int64), tf.zeros_like(index))
    return byte, size


def _app1_segments(data: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(offset of the TIFF header in the first `APP1 "Exif\\0\\0"` segment or 0, start and end
    of the last XMP packet or 0, 0): what Pillow's JPEG reader keeps as `exif` and `xmp`.

    Walks the marker segments from SOI to SOS as Pillow does (fill bytes and stray
    non-0xFF bytes skipped one by one)."""
    byte, size = _reader(data)

    def starts_with(pos, text: bytes):
        expected = tf.constant(list(text), tf.int64)
        return tf.reduce_all(tf.equal(byte(pos + tf.range(len(text), dtype=tf.int64)), expected))

    def step(pos, exif, xmp_start, xmp_end, done):
        b0, b1 = byte(pos), byte(pos + 1)
        length = byte(pos + 2) * 256 + byte(pos + 3)
        marker = tf.equal(b0, 0xFF)
        standalone = tf.logical_or(tf.logical_and(b1 >= 0xD0, b1 <= 0xD8), tf.equal(b1, 0x01))
        stop = tf.logical_or(pos + 4 > size,
                             tf.logical_and(marker, tf.logical_or(tf.equal(b1, 0xDA),
                                                                  tf.equal(b1, 0xD9))))
        app1 = tf.logical_and(tf.logical_and(marker, tf.equal(b1, 0xE1)), tf.logical_not(stop))
        new_exif = tf.logical_and(tf.logical_and(app1, tf.equal(exif, 0)),
                                  tf.logical_and(length >= 8, starts_with(pos + 4, _EXIF_HEADER)))
        new_xmp = tf.logical_and(tf.logical_and(app1, length >= 2 + len(_XMP_HEADER)),
                                 starts_with(pos + 4, _XMP_HEADER))
        advance = tf.where(tf.logical_not(marker), tf.constant(1, tf.int64),
                           tf.where(standalone, tf.constant(2, tf.int64), 2 + length))
        advance = tf.where(tf.logical_and(marker, tf.equal(b1, 0xFF)),
                           tf.constant(1, tf.int64), advance)
        return (pos + advance, tf.where(new_exif, pos + 10, exif),
                tf.where(new_xmp, pos + 4 + len(_XMP_HEADER), xmp_start),
                tf.where(new_xmp, tf.minimum(pos + 2 + length, size), xmp_end), stop)

    zero = tf.constant(0, tf.int64)
    _, exif, xmp_start, xmp_end, _ = tf.while_loop(
        lambda *state: tf.logical_not(state[-1]), step,
        (tf.constant(2, tf.int64), zero, zero, zero, tf.constant(False)),
        maximum_iterations=_MAX_SEGMENTS)
    return exif, xmp_start, xmp_end


def _tiff_orientation(data: tf.Tensor, tiff: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(orientation, whether IFD0 has the tag at all) from the TIFF structure at `tiff`
    (byte order II or MM); the value is 1 when the header is malformed, the tag absent, or
    its type/count not a single (S)SHORT/(S)LONG (Pillow then reads no usable number)."""
    byte, size = _reader(data)
    little = tf.logical_and(tf.equal(byte(tiff), 0x49), tf.equal(byte(tiff + 1), 0x49))
    big = tf.logical_and(tf.equal(byte(tiff), 0x4D), tf.equal(byte(tiff + 1), 0x4D))

    def uint(index, width: int):
        index = tf.convert_to_tensor(index, tf.int64)
        digits = tf.stack([byte(index + k) for k in range(width)], -1)
        weights = tf.constant([256 ** k for k in range(width)], tf.int64)
        weights = tf.where(little, weights, tf.reverse(weights, [0]))
        return tf.reduce_sum(digits * weights, -1)

    ifd = tiff + uint(tiff + 4, 4)
    count = uint(ifd, 2)
    entries = ifd + 2 + 12 * tf.range(count, dtype=tf.int64)
    tags, types = uint(entries, 2), uint(entries + 2, 2)
    counts = uint(entries + 4, 4)
    values = tf.where(tf.logical_or(tf.equal(types, 3), tf.equal(types, 8)),
                      uint(entries + 8, 2), uint(entries + 8, 4))
    usable = tf.logical_and(tf.equal(tags, ORIENTATION_TAG), tf.equal(counts, 1))
    usable = tf.logical_and(usable, tf.reduce_any(
        tf.equal(types[:, None], tf.constant([3, 4, 8, 9], tf.int64)), -1))
    found = tf.concat([tf.boolean_mask(values, usable), [1]], 0)[0]
    well_formed = tf.logical_and(tf.logical_or(little, big), ifd + 2 + 12 * count <= size)
    present = tf.logical_and(well_formed, tf.reduce_any(tf.equal(tags, ORIENTATION_TAG)))
    return tf.where(well_formed, found, tf.constant(1, tf.int64)), present


def _png_like_pillow(image_bytes: tf.Tensor) -> tf.Tensor:
    """PNG → uint8 [H, W, C]: 16-bit grey scaled by 1/257 and rounded (our `_to_rgb`), 16-bit
    colour cut to its high byte (Pillow's `RGB;16B` unpacker); 8-bit files come back exact."""
    wide = tf.cast(tf.io.decode_png(image_bytes, channels=0, dtype=tf.uint16), tf.int32)
    grey = tf.equal(tf.shape(wide)[-1], 1)
    narrow = tf.where(grey, (wide * 2 + 257) // 514, wide // 256)
    return tf.cast(narrow, tf.uint8)


def composite_on_white(image: tf.Tensor) -> tf.Tensor:
    """uint8 [H, W, 1|2|3|4] → RGB [H, W, 3], transparency over white as the extract job's
    Pillow decode does (tf.io.decode_image alone would drop alpha and leave a black ground)."""
    image.set_shape([None, None, None])
    pixels = tf.cast(image, tf.float32)
    channels = tf.shape(pixels)[-1]
    opaque = tf.ones_like(pixels[..., :1]) * 255.0
    rgba = tf.switch_case(channels - 1, [
        lambda: tf.concat([tf.repeat(pixels[..., :1], 3, axis=-1), opaque], -1),
        lambda: tf.concat([tf.repeat(pixels[..., :1], 3, axis=-1), pixels[..., 1:2]], -1),
        lambda: tf.concat([pixels[..., :3], opaque], -1),
        lambda: pixels[..., :4]])
    alpha = rgba[..., 3:] / 255.0
    rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
    return tf.cast(tf.clip_by_value(tf.round(rgb), 0.0, 255.0), tf.uint8)
