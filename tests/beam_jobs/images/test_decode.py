"""The decoding matrix: each hard kind of input, made with Pillow here, and its outcome."""

import json

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.testing.util import assert_that, equal_to

from beam_jobs.extract.plan.splits import (
    DeduplicateAndSplit,
    SelectPlanned,
    SetAsideUnusable,
    rejected_uri,
)
from beam_jobs.images.decode import (
    DecodeError,
    decode_for_backbone,
    decode_rgb,
    jpeg_draft_ratio,
    resize_to_square,
)
from beam_jobs.images.decode_stage import DecodeImages
from beam_jobs.sources.elements import REASONS, SourceImage
from tests.helpers import images as md

# name → (bytes factory, expected: an RGB shape (H, W) or a dead-letter reason)
MATRIX = {
    "cmyk_jpeg": (md.cmyk_jpeg, (16, 24)),
    "png_16bit": (md.png_16bit, (16, 24)),
    "palette_png_with_transparency": (md.palette_png_with_transparency, (16, 24)),
    "rgba_png": (md.rgba_png_half_transparent, (16, 24)),
    "exif_rotated_jpeg": (md.exif_rotated_jpeg, (24, 16)),
    "animated_gif": (md.animated_gif, (16, 24)),
    "animated_webp": (md.animated_webp, (16, 24)),
    "multipage_tiff": (md.multipage_tiff, (16, 24)),
    "truncated_jpeg": (lambda: md.truncated(md.plain_jpeg()), "truncated"),
    "truncated_png": (lambda: md.truncated(md.plain_png()), "truncated"),
    "png_cut_in_header": (lambda: md.plain_png()[:30], "truncated"),
    "random_bytes_named_jpg": (md.random_bytes, "not_an_image"),
    "zero_bytes": (lambda: b"", "empty"),
    "text_named_png": (lambda: b"just some notes\n", "not_an_image"),
    "html_error_page_named_jpg": (lambda: md.HTML_ERROR_PAGE, "not_an_image"),
    "svg": (lambda: md.SVG, "not_an_image"),
    "pdf": (lambda: md.PDF, "not_an_image"),
    "huge_declared_size": (md.huge_declared_png, "too_large"),
}


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_hard_input_decodes_to_rgb_or_its_dead_letter_reason(name):
    make, expected = MATRIX[name]
    if isinstance(expected, str):
        with pytest.raises(DecodeError) as caught:
            decode_rgb(make())
        assert caught.value.reason == expected and expected in REASONS
        assert "0x" not in caught.value.detail  # no object addresses: deterministic detail
    else:
        pixels = decode_rgb(make())
        assert pixels.dtype == np.uint8 and pixels.shape == (*expected, 3)


def test_exif_orientation_is_applied():
    pixels = decode_rgb(md.exif_rotated_jpeg())
    # orientation 6 = rotate 90° clockwise: the stored bottom-left corner comes to top-left
    stored = md._gradient()
    np.testing.assert_allclose(pixels[0, 0], stored[-1, 0], atol=12)


def test_transparency_is_composited_on_white():
    rgba = decode_rgb(md.rgba_png_half_transparent())
    assert (rgba[:, :12] == 255).all() and (rgba[:, 12:] == [255, 0, 0]).all()
    assert (decode_rgb(md.palette_png_with_transparency())[:4, :4] == 255).all()


def test_16bit_is_scaled_to_the_full_8bit_range():
    grey = decode_rgb(md.png_16bit())[..., 0]
    assert grey.min() == 0 and grey.max() == 255


def test_animation_gives_its_first_frame():
    for make in (md.animated_gif, md.animated_webp, md.multipage_tiff):
        assert np.abs(decode_rgb(make()).astype(int) - 30).max() <= 2


def test_pixel_limit_is_configurable():
    with pytest.raises(DecodeError, match="too_large"):
        decode_rgb(md.plain_png(), max_pixels=100)


def test_decoding_is_deterministic():
    for make, _ in MATRIX.values():
        data = make()
        try:
            first = decode_rgb(data)
        except DecodeError as err:
            with pytest.raises(DecodeError) as again:
                decode_rgb(data)
            assert (again.value.reason, again.value.detail) == (err.reason, err.detail)
        else:
            np.testing.assert_array_equal(first, decode_rgb(data))


def test_squash_is_the_default_policy_and_unchanged():
    image = np.arange(4 * 8 * 3, dtype=np.uint8).reshape(4, 8, 3)
    expected = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(
        tf.cast(image, tf.float32), [6, 6], method="bilinear", antialias=True)), 0, 255), tf.uint8)
    np.testing.assert_array_equal(resize_to_square(image, 6), expected)
    np.testing.assert_array_equal(resize_to_square(image, 6, "squash"), expected)


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (3, 50, 3), (50, 3, 1),
                                   (64, 63, 3), (64, 64, 3), (17, 5, 1)])
def test_enlarging_skips_antialiasing_without_changing_a_pixel(shape):
    """The fast path for images smaller than the target gives the antialiased resize's pixels
    (antialiasing is a no-op when enlarging) up to float rounding: at most one level on under
    1 % of pixels, exactly for Fashion-MNIST's 28 → 224.  Serving runs this same function."""
    image = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    for size in (64, 224):
        rgb = tf.image.grayscale_to_rgb(tf.constant(image)) if shape[-1] == 1 else image
        expected = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(
            tf.cast(rgb, tf.float32), [size, size], method="bilinear", antialias=True)), 0, 255),
            tf.uint8)
        got = resize_to_square(image, size).numpy().astype(int)
        diff = np.abs(got - expected.numpy().astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())
        if shape == (28, 28, 1) and size == 224:
            assert diff.max() == 0


def test_crop_keeps_the_centre_and_pad_adds_black_borders():
    image = np.full((4, 8, 3), 200, np.uint8)
    image[:, :2] = image[:, 6:] = 10  # dark outer columns: crop removes them
    cropped = resize_to_square(image, 4, "crop").numpy()
    assert (cropped == 200).all()
    padded = resize_to_square(np.full((4, 8, 3), 200, np.uint8), 8, "pad").numpy()
    assert (padded[:2] == 0).all() and (padded[-2:] == 0).all() and (padded[2:6] == 200).all()


@pytest.mark.parametrize("policy", ["squash", "crop", "pad"])
def test_policy_gives_the_same_pixels_in_a_serving_graph_with_dynamic_shapes(policy):
    image = np.random.default_rng(0).integers(0, 256, (10, 17, 3), dtype=np.uint8)
    graph = tf.function(lambda x: resize_to_square(x, 8, policy),
                        input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
    batched = resize_to_square(image[None], 8, policy)[0]
    np.testing.assert_array_equal(graph(image), batched)


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="resize policy"):
        resize_to_square(np.zeros((2, 2, 3), np.uint8), 4, "stretch")


def _reasons(lines):
    return sorted(json.loads(line)["reason"] for line in lines)


def test_every_bad_input_is_accounted_once_through_dedup_and_decode():
    good = md.plain_png()
    inputs = [SourceImage(f"m/{name}", "cat", encoded=make()) for name, (make, _) in MATRIX.items()]
    inputs += [SourceImage("m/empty2", "dog", encoded=b""),          # zero bytes, other label
               SourceImage("m/copy1", "cat", encoded=good), SourceImage("m/copy2", "cat",
                                                                         encoded=good),
               SourceImage.unusable("m/gone", "unreadable", "after 4 attempt(s)")]
    expected_bad = sorted([e for _, e in MATRIX.values() if isinstance(e, str)]
                          + ["empty", "duplicate", "unreadable"])
    with beam.Pipeline() as p:
        usable = p | "Read" >> beam.Create(inputs) | SetAsideUnusable()
        plan = usable.kept | DeduplicateAndSplit((0.8, 0.1, 0.1))
        skip = ((usable.dead_letter, plan.dead_letter) | "Rejected" >> beam.Flatten()
                | beam.FlatMap(rejected_uri))
        selected = (p | "ReadAgain" >> beam.Create(inputs)
                    | SelectPlanned(skip, (0.8, 0.1, 0.1)))
        decoded = selected.kept | DecodeImages(max_pixels=89_478_485, size=16)
        letters = ((usable.dead_letter, plan.dead_letter, selected.dead_letter,
                    decoded.dead_letter) | beam.Flatten())
        assert_that(letters | beam.combiners.ToList() | beam.Map(_reasons),
                    equal_to([expected_bad]), label="Reasons")
        accepted = decoded.decoded | beam.combiners.Count.Globally()
        assert_that(accepted, equal_to([len(inputs) - len(expected_bad)]), label="Accepted")


def _png(seed: int) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def test_second_read_skips_what_the_first_rejected_and_letters_what_broke_since():
    """The extract job reads the source twice; an input that was fine when planned but is
    unreadable or empty on the second read must become one dead letter, not vanish, and
    inputs the first pass already rejected must not be counted again."""
    good = md.plain_png()
    first = [SourceImage("m/a", "cat", encoded=good),
             SourceImage("m/b", "cat", encoded=good),                # duplicate of m/a
             SourceImage("m/c", "dog", encoded=_png(3)),
             SourceImage("m/d", "dog", encoded=_png(4)),
             SourceImage.unusable("m/gone", "unreadable", "404")]
    second = [first[0], first[1],
              SourceImage.unusable("m/c", "unreadable", "deleted since"),  # broke since
              SourceImage("m/d", "dog", encoded=b""),                        # emptied since
              first[4]]
    with beam.Pipeline() as p:
        usable = p | "Read" >> beam.Create(first) | SetAsideUnusable()
        plan = usable.kept | DeduplicateAndSplit((0.8, 0.1, 0.1))
        skip = ((usable.dead_letter, plan.dead_letter) | "Rejected" >> beam.Flatten()
                | beam.FlatMap(rejected_uri))
        selected = (p | "ReadAgain" >> beam.Create(second)
                    | SelectPlanned(skip, (0.8, 0.1, 0.1)))
        assert_that(selected.kept | beam.Map(lambda kv: kv[1].uri), equal_to(["m/a"]),
                    label="Kept")
        assert_that(selected.dead_letter | beam.Map(lambda line: (
            json.loads(line)["uri"], json.loads(line)["reason"])),
            equal_to([("m/c", "unreadable"), ("m/d", "unreadable")]), label="Broken")


def _photo_jpeg(width: int, height: int, seed: int = 0) -> bytes:
    """Smooth gradients, a few edges and mild noise: DCT scaling has something to lose."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([(x * 0.3 + y * 0.1) % 256, (y * 0.25) % 256, 128 + 100 * np.sin(x / 40)],
                    axis=-1)
    base[height // 3: height // 2, width // 4: width // 2] = (250, 30, 30)
    noisy = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
    return md.png_bytes(noisy, "JPEG")


def test_big_jpeg_is_decoded_at_reduced_scale_close_to_the_full_decode():
    jpeg = _photo_jpeg(1600, 1200)
    ratio = jpeg_draft_ratio(1600, 1200, 224)
    assert ratio > 1
    assert decode_rgb(jpeg, draft_size=224).shape == (1200 // ratio, 1600 // ratio, 3)
    drafted = decode_for_backbone(jpeg, 224)
    full = resize_to_square(decode_rgb(jpeg), 224).numpy()
    assert drafted.shape == full.shape == (224, 224, 3) and drafted.dtype == np.uint8
    diff = np.abs(drafted.astype(int) - full.astype(int))
    assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 8, (diff.mean(), diff.max())


def test_png_and_small_jpeg_are_never_draft_scaled():
    assert jpeg_draft_ratio(300, 300, 224) == 1
    png = md.png_bytes(np.zeros((900, 1200, 3), np.uint8))
    assert decode_rgb(png, draft_size=224).shape == (900, 1200, 3)


def _decode_stage(inputs, size, decoded, reasons, threads=2, in_flight=3) -> dict[str, int]:
    """Run DecodeImages alone; assert (uri, pixel bytes, shape) of what it emits and the sorted
    reasons of its dead letters; return its counters."""
    from apache_beam.metrics.metric import MetricsFilter

    with beam.Pipeline() as p:
        out = (p | beam.Create([("train", image) for image in inputs])
               | DecodeImages(89_478_485, size, threads=threads, in_flight=in_flight))
        assert_that(out.decoded | beam.Map(lambda m: (m.uri, m.image.tobytes(), m.image.shape)),
                    equal_to(decoded), label="Decoded")
        assert_that(out.dead_letter | beam.combiners.ToList() | beam.Map(_reasons),
                    equal_to([reasons]), label="DeadLetters")
    return {c.key.metric.name: c.committed for c in
            p.result.metrics().query(MetricsFilter().with_namespace("extract"))["counters"]}


def _emitted(uri: str, pixels: np.ndarray) -> tuple[str, bytes, tuple[int, ...]]:
    return uri, pixels.tobytes(), pixels.shape


def test_decode_stage_emits_the_backbone_input_and_keeps_small_images_native():
    photo, small = _photo_jpeg(120, 90), np.full((12, 10, 1), 7, np.uint8)
    _decode_stage([SourceImage("a.jpg", "cat", encoded=photo),
                   SourceImage("idx#0", "cat", pixels=small)], size=32,
                  decoded=[_emitted("a.jpg", decode_for_backbone(photo, 32)),
                           _emitted("idx#0", small)],  # enlarged with its batch
                  reasons=[])


def test_thread_pool_decode_emits_every_image_once_and_letters_the_bad():
    good = [SourceImage(f"g{i}.png", "cat", encoded=_png(i)) for i in range(23)]
    bad = [SourceImage("t.jpg", "cat", encoded=md.truncated(md.plain_jpeg())),
           SourceImage("r.jpg", "cat", encoded=md.random_bytes()),
           SourceImage("z.jpg", "cat", encoded=b"")]
    inputs = good[:10] + bad[:2] + good[10:] + bad[2:]
    expected = [_emitted(image.uri, resize_to_square(decode_rgb(image.encoded), 4).numpy())
                for image in good]
    counters = _decode_stage(inputs, 4, expected, ["empty", "not_an_image", "truncated"],
                             threads=3, in_flight=2)
    assert counters == {"decoded": len(good), "decode_rejected": len(bad)}
