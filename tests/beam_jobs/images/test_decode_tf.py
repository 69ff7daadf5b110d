"""The serving graph sees each photo as the extract job did: beam_jobs.images.decode_tf against
beam_jobs.images.decode.decode_for_backbone (Pillow), and the exported signatures end to end."""

from __future__ import annotations

import functools
import io
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from beam_jobs import backbones
from beam_jobs.images import decode as imaging
from beam_jobs.images.decode import decode_for_backbone, jpeg_draft_ratio, resize_to_square
from beam_jobs.images.decode_tf import decode_for_serving, exif_orientation
from tests.helpers import images as make_data
from trainer.serve import export

SIZE = 224  # a real backbone's input side: photo sizes then need draft ratios 2, 4 and 8
PHOTO_SIZES = [(300, 200), (640, 480), (1024, 768), (2048, 1536), (4032, 3024)]
CLASSES = ("cat", "coffee", "person")


def _encode(pixels: np.ndarray, fmt: str, mode: str | None = None, **params) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, format=fmt, **params)
    return buffer.getvalue()


_parse = tf.function(exif_orientation, input_signature=[tf.TensorSpec([], tf.string)])
_photo_jpeg = functools.cache(make_data.photo_jpeg)  # photo-sized encodes are not free


@functools.cache
def _serving_decode(size: int, policy: str):
    """One traced graph per (size, policy): tracing costs far more than decoding."""
    return tf.function(lambda b: decode_for_serving(b, size, policy, imaging.DRAFT_FACTOR),
                       input_signature=[tf.TensorSpec([], tf.string)])


def _serving_pixels(encoded: bytes, size: int = SIZE,
                    policy: str = imaging.RESIZE_POLICY) -> np.ndarray:
    return _serving_decode(size, policy)(tf.constant(encoded)).numpy()


@pytest.fixture(scope="module")
def photo_jpegs() -> dict[tuple[int, int], bytes]:
    return {(w, h): _photo_jpeg(w, h, "coffee") for w, h in PHOTO_SIZES}


def _with_alpha(pixels: np.ndarray) -> np.ndarray:
    ramp = np.linspace(0, 255, pixels.shape[1]).astype(np.uint8)
    return np.concatenate([pixels, np.tile(ramp[None, :, None], (pixels.shape[0], 1, 1))], -1)


def _format_copies() -> dict[str, bytes]:
    photo = make_data.photo(160, 120, "astronaut")
    rgba = _with_alpha(photo)
    return {"webp_lossy": _encode(photo, "WEBP", quality=85),
            "webp_lossless": _encode(photo, "WEBP", lossless=True),
            "webp_alpha": _encode(rgba, "WEBP", "RGBA", quality=85),
            "png_alpha": _encode(rgba, "PNG", "RGBA"),
            "png_grey_alpha": _encode(rgba[..., [0, 3]], "PNG", "LA"),
            "png_16bit": make_data.png_16bit(),
            "png_palette_transparent": make_data.palette_png_with_transparency(),
            "bmp": _encode(photo, "BMP"), "bmp_32bit": _encode(rgba, "BMP", "RGBA"),
            "gif_first_frame": make_data.animated_gif(), "gif_photo": _encode(photo, "GIF"),
            "jpeg_grey": _encode(photo[..., 0], "JPEG"), "jpeg_cmyk": make_data.cmyk_jpeg()}


@pytest.mark.parametrize("big_endian", [False, True], ids=["II", "MM"])
def test_orientation_parser_reads_all_eight_tags_in_both_byte_orders(big_endian):
    for orientation in range(1, 9):
        encoded = make_data.photo_jpeg(64, 48, orientation=orientation, big_endian=big_endian)
        assert Image.open(io.BytesIO(encoded)).getexif()[0x0112] == orientation
        assert int(_parse(tf.constant(encoded))) == orientation


def test_orientation_parser_falls_back_to_1_where_pillow_does_not_rotate():
    photo = Image.fromarray(make_data.photo(64, 48))
    as_long = make_data._save(photo, "JPEG", exif=make_data.exif_block(6, tag_type=4))
    as_byte = make_data._save(photo, "JPEG", exif=make_data.exif_block(6, tag_type=1))
    out_of_range = make_data._save(photo, "JPEG", exif=make_data.exif_block(9))
    cut = make_data._save(photo, "JPEG", exif=make_data.exif_block(6)[:16])
    assert int(_parse(tf.constant(as_long))) == 6  # Pillow reads a LONG tag as an int too
    for encoded in (as_byte, out_of_range, cut, make_data.plain_jpeg(), b"\xff\xd8\xff",
                    make_data.random_bytes(64), b""):
        assert int(_parse(tf.constant(encoded))) == 1


def test_xmp_orientation_counts_only_where_exif_has_none_as_in_pillow():
    photo = Image.fromarray(make_data.photo(64, 48))
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description '
           b'tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    other_exif = Image.Exif()
    other_exif[0x010F] = "camera"
    files = {6: make_data._save(photo, "JPEG", xmp=xmp),
             8: make_data._save(photo, "JPEG", xmp=xmp.replace(b'="6"/>', b'>8<')),
             3: make_data._save(photo, "JPEG", xmp=xmp, exif=make_data.exif_block(3))}
    files[5] = make_data._save(photo, "JPEG", xmp=xmp.replace(b"6", b"5"),
                               exif=other_exif.tobytes())
    for expected, encoded in files.items():
        assert Image.open(io.BytesIO(encoded)).getexif().get(0x0112) == expected
        assert int(_parse(tf.constant(encoded))) == expected


def test_jpeg_pixels_equal_pillows_draft_decode_in_every_size_class(photo_jpegs):
    ratios = set()
    for (width, height), encoded in photo_jpegs.items():
        for size in (SIZE, 16):
            ratios.add(jpeg_draft_ratio(width, height, size))
            np.testing.assert_array_equal(_serving_pixels(encoded, size),
                                          decode_for_backbone(encoded, size))
    if imaging.DRAFT_FACTOR > 0:
        assert ratios == {1, 2, 4, 8}


@pytest.mark.parametrize("policy", ["squash", "crop"])
def test_exif_oriented_jpegs_give_the_extract_jobs_upright_pixels(policy):
    for orientation in range(1, 9):
        encoded = _photo_jpeg(1024, 768, "chelsea", orientation=orientation,
                                       big_endian=orientation % 2 == 0)
        np.testing.assert_array_equal(_serving_pixels(encoded, SIZE, policy),
                                      decode_for_backbone(encoded, SIZE, policy))


def test_every_format_tensorflow_reads_gives_the_extract_jobs_pixels():
    for name, encoded in _format_copies().items():
        np.testing.assert_array_equal(_serving_pixels(encoded, 48), decode_for_backbone(
            encoded, 48), err_msg=name)


def test_animated_webp_is_refused_instead_of_crashing_the_server():
    """TF 2.21 corrupts the heap on it with channels=0; a clean error is what a server needs."""
    with pytest.raises(tf.errors.InvalidArgumentError):
        _serving_pixels(make_data.animated_webp(), 48)


# --- the exported SavedModel ------------------------------------------------------------------

@pytest.fixture(scope="module")
def export_224px(tmp_path_factory) -> tuple[str, backbones.Backbone, keras.Model]:
    """A serving export around a 224-px tiny backbone and an untrained head."""
    from tests.helpers.tiny_backbone import make_tiny_backbone

    root = tmp_path_factory.mktemp("serving")
    backbone = backbones.load(make_tiny_backbone(str(root / "backbone"), image_size=SIZE))
    head = keras.Sequential([keras.Input([backbone.feature_dim]),
                             keras.layers.Dense(len(CLASSES), activation="softmax")])
    serving = export.export_serving(head, backbone, CLASSES, str(root / "model" / "serving"))
    return serving, backbone, head


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.mark.slow
def test_served_transfer_values_equal_extracted_ones_for_orientations_and_webp(export_224px):
    serving_dir, backbone, _ = export_224px
    files = [_photo_jpeg(w, h, "chelsea", orientation=o, big_endian=o > 4)
             for o, (w, h) in zip(range(1, 9), PHOTO_SIZES * 2)]
    photo = make_data.photo(640, 480, "coffee")
    files += [_encode(photo, "WEBP", quality=85), _encode(photo, "WEBP", lossless=True)]
    served = tf.saved_model.load(serving_dir).signatures[export.FEATURES_SIGNATURE](
        **{export.INPUT_NAME: tf.constant(files)})[export.OUTPUT_TRANSFER_VALUES].numpy()
    extracted = backbone(np.stack([decode_for_backbone(f, SIZE) for f in files]))
    assert _cosines(served, extracted).min() >= 0.999
    np.testing.assert_allclose(served, extracted, atol=1e-6)


@pytest.mark.slow
def test_tta_serving_averages_the_extract_jobs_view_0_and_mirror_of_exif_photos(
        export_224px, tmp_path):
    """`--tta` serving on EXIF-rotated photos: the mean of the head on exactly what the extract
    job feeds for view 0 and for its mirror (view -1), so the upright photo is what is flipped."""
    from beam_jobs.extract.stages.augment import mirror

    _, backbone, head = export_224px
    serving_dir = export.export_serving(head, backbone, CLASSES, str(tmp_path / "serving"),
                                        tta=True)
    files = [_photo_jpeg(w, h, "chelsea", orientation=o, big_endian=o > 4)
             for o, (w, h) in zip(range(1, 9), PHOTO_SIZES * 2)]
    served = tf.saved_model.load(serving_dir).signatures["serving_default"](
        **{export.INPUT_NAME: tf.constant(files)})[export.OUTPUT_PROBABILITIES].numpy()
    view_0 = np.stack([decode_for_backbone(f, SIZE) for f in files])
    mirrored = np.stack([mirror(square) for square in view_0])
    plain = head(backbone(view_0)).numpy()
    np.testing.assert_allclose(served, (plain + head(backbone(mirrored)).numpy()) / 2, atol=1e-6)
    assert not np.allclose(served, plain, atol=1e-6)  # the mirror did count


def test_pixels_signature_serves_tiff_and_16bit_as_extraction_decodes_them(export_224px):
    serving_dir, backbone, head = export_224px
    model = tf.saved_model.load(serving_dir)
    photo = make_data.photo(400, 300, "astronaut")
    files = [_encode(photo, "TIFF"), make_data.multipage_tiff(), make_data.png_16bit()]
    pixels = [decode_for_backbone(f, SIZE) for f in files]
    for image in pixels:
        out = model.signatures[export.FEATURES_PIXELS_SIGNATURE](
            **{export.PIXELS_INPUT: tf.constant(image[None])})
        np.testing.assert_array_equal(out[export.OUTPUT_TRANSFER_VALUES].numpy(),
                                      backbone(image[None]))
    out = model.signatures[export.PIXELS_SIGNATURE](**{export.PIXELS_INPUT: np.stack(pixels)})
    np.testing.assert_allclose(out[export.OUTPUT_PROBABILITIES].numpy(),
                               head(backbone(np.stack(pixels))).numpy(), atol=1e-6)
    assert [s.decode() for s in out[export.OUTPUT_LABEL].numpy()] == [
        CLASSES[i] for i in out[export.OUTPUT_PROBABILITIES].numpy().argmax(-1)]


def test_pixels_signature_uses_square_pixels_as_given_and_resizes_others(export_224px):
    serving_dir, backbone, _ = export_224px
    features = tf.saved_model.load(serving_dir).signatures[export.FEATURES_PIXELS_SIGNATURE]
    square = make_data.photo(SIZE, SIZE, "chelsea")[None]
    wide = make_data.photo(300, 200, "chelsea")[None]
    for given, fed in ((square, square), (wide, resize_to_square(wide, SIZE).numpy())):
        out = features(**{export.PIXELS_INPUT: tf.constant(given)})
        np.testing.assert_array_equal(out[export.OUTPUT_TRANSFER_VALUES].numpy(), backbone(fed))


def test_export_writes_preprocessing_json_beside_labels(export_224px):
    model_dir = os.path.dirname(export_224px[0])
    with open(os.path.join(model_dir, export.PREPROCESSING_FILE)) as f:
        preprocessing = json.load(f)
    assert preprocessing == {
        export.KEY_IMAGE_SIZE: SIZE, export.KEY_RESIZE_POLICY: imaging.RESIZE_POLICY,
        export.KEY_JPEG_FACTOR: imaging.DRAFT_FACTOR,
        export.KEY_PIXELS_SIGNATURE: export.PIXELS_SIGNATURE,
        export.KEY_PIXELS_INPUT: export.PIXELS_INPUT, export.KEY_TTA: False,
        export.KEY_TEMPERATURE: 1.0}  # exported without calibration: the identity temperature
    assert os.path.exists(os.path.join(model_dir, export.LABELS_FILE))
