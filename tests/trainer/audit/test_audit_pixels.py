"""The duplicate audit's pixel stage: thumbprints of copies, pixels back from every uri kind,
and the two-stage rule telling copies from look-alikes that transfer values cannot."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from tests.helpers import images as make_data
from trainer.audit.duplicates import DUPLICATE_PIXELS, PIXELS_WITH_STANDOUT, near_duplicates
from trainer.audit.neighbours import nearest_neighbours
from trainer.audit.pixels import aligned_similarity, grey_grid, similarity, thumbprint, trimmed


def _scene(seed: int, size: int = 64) -> Image.Image:
    """A smooth random picture: a few blurred blobs, like a photo's low frequencies."""
    noise = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(noise).resize((size, size), Image.BICUBIC)


def _decoded(image: Image.Image, fmt: str = "PNG", **params) -> np.ndarray:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


COPIES = {  # family: (make the copy, pixel similarity it must keep)
    "scale_down": (lambda im: _decoded(im.resize((42, 42), Image.LANCZOS)), DUPLICATE_PIXELS),
    "scale_up": (lambda im: _decoded(im.resize((112, 112), Image.BICUBIC)), DUPLICATE_PIXELS),
    "jpeg_q60": (lambda im: _decoded(im, "JPEG", quality=60), DUPLICATE_PIXELS),
    "border": (lambda im: _decoded(ImageOps.expand(im, 5, (255, 255, 255))), DUPLICATE_PIXELS),
    "brightness": (lambda im: _decoded(ImageEnhance.Brightness(im).enhance(1.2)),
                   DUPLICATE_PIXELS),  # clipped highlights cost more: × 1.3 keeps 0.986
    "gif": (lambda im: _decoded(im.quantize(256), "GIF"), DUPLICATE_PIXELS),
    "crop": (lambda im: _decoded(im.crop((2, 1, 62, 62))), PIXELS_WITH_STANDOUT),
}


@pytest.mark.parametrize("family", sorted(COPIES))
def test_copies_keep_their_thumbprint_and_other_pictures_do_not(family):
    original = _scene(0)
    make_copy, needed = COPIES[family]
    mine = thumbprint(np.asarray(original))
    assert float(similarity(mine, thumbprint(make_copy(original)))) >= needed
    others = [float(similarity(mine, thumbprint(np.asarray(_scene(seed)))))
              for seed in range(1, 30)]
    assert max(others) < PIXELS_WITH_STANDOUT


def test_alignment_finds_crops_and_frames_the_fixed_thumbnails_miss():
    def detailed(seed: int) -> Image.Image:
        noise = np.random.default_rng(seed).integers(0, 256, (10, 15, 3), dtype=np.uint8)
        return Image.fromarray(noise).resize((300, 200), Image.BICUBIC)

    original = detailed(0)
    cropped = _decoded(original.crop((18, 4, 285, 190)), "JPEG", quality=80)  # 6/2/5/5 %
    framed = _decoded(ImageOps.expand(original, 27, original.getpixel((0, 0))))  # 9 %, edge colour
    mine, grid = thumbprint(np.asarray(original)), grey_grid(np.asarray(original))
    assert float(similarity(mine, thumbprint(cropped))) < DUPLICATE_PIXELS  # the crop moved it
    for copy in (cropped, framed):
        assert aligned_similarity(grid, grey_grid(copy)) >= DUPLICATE_PIXELS
        assert aligned_similarity(grey_grid(copy), grid) >= DUPLICATE_PIXELS  # either order
    others = [aligned_similarity(grid, grey_grid(np.asarray(detailed(seed))))
              for seed in range(1, 12)]
    assert max(others) < PIXELS_WITH_STANDOUT
    assert np.isnan(aligned_similarity(grid, np.full_like(grid, 7)))  # flat: nothing to align


def test_a_uniform_frame_is_trimmed_and_content_edges_are_not():
    grey = np.full((20, 30), 255.0, np.float32)  # a white border …
    grey[2:18, 2:28] = 0.0  # … around a black background …
    grey[5:15, 8:22] = np.arange(14, dtype=np.float32) * 10 + 60  # … around the content
    content, background = trimmed(grey)
    assert content.shape == (10, 14) and background == 0.0
    busy = np.random.default_rng(0).integers(0, 256, (20, 30)).astype(np.float32)
    assert trimmed(busy)[0].shape == busy.shape and trimmed(busy)[1] is None
    assert not np.any(thumbprint(np.full((9, 9, 3), 77, np.uint8)))  # flat: no evidence


def test_pixels_come_back_from_files_idx_tfrecord_and_cifar_uris(tmp_path):
    from trainer.audit.pixels import PixelReader

    image = make_data.class_image(1, 3, 12, 3)
    path = tmp_path / "one.png"
    path.write_bytes(make_data.png_bytes(image))
    idx = make_data.write_idx(str(tmp_path / "idx"), {"train": 4})
    cifar = make_data.write_cifar10(str(tmp_path / "cifar"), {"data_batch_1": 3})
    record = make_data.write_tfrecord(str(tmp_path / "train.tfrecord"), [
        make_data.tf_example({"image/encoded": make_data.png_bytes(image), "label": 0})] * 2)

    class RunManifest:  # all the reader asks of a committed run
        def __init__(self, source):
            self.manifest = {"source": source}

    read = PixelReader([RunManifest(f"idx:{idx}"), RunManifest(f"cifar10:{cifar}")]).read
    np.testing.assert_array_equal(read(str(path)), image)
    np.testing.assert_array_equal(read(f"{record}#1"), image)
    assert read("idx:train#2").shape == (12, 12, 3)
    assert read("cifar10:data_batch_1#2").shape == (32, 32, 3)
    assert read(f"{record}#7") is None and read(str(tmp_path / "gone.png")) is None


def test_pixels_rule_tells_copies_from_look_alikes_the_transfer_values_confuse():
    """Transfer values of 30 look-alikes sit as close as 5 planted copies do; the pixels
    differ between look-alikes and agree between copies."""
    rng = np.random.default_rng(0)
    base = rng.normal(0, 1.0, 64)
    spread = rng.normal(0, 1.0, (60, 64))
    crowd = base + rng.normal(0, 0.05, (30, 64))
    values = np.concatenate([crowd, spread, spread[:5] + rng.normal(0, 0.05, (5, 64))])
    pictures = [_scene(n) for n in range(95)]
    pixels = [np.asarray(p) for p in pictures[:90]] + [
        _decoded(p.resize((40, 40), Image.LANCZOS), "JPEG", quality=70)
        for p in pictures[30:35]]
    uris = np.asarray([f"img{n:03d}" for n in range(95)], object)
    splits = np.asarray(["train"] * 90 + ["test"] * 5, object)
    neighbours = nearest_neighbours(values.astype(np.float32), 10)
    found = near_duplicates(values.astype(np.float32), neighbours, uris, splits, "pixels",
                            read=lambda uri: pixels[int(uri[3:])])
    pairs = {frozenset((uris[a], uris[b])) for a, b in zip(found.a, found.b)}
    assert pairs == {frozenset((f"img{30 + n:03d}", f"img{90 + n:03d}")) for n in range(5)}
    assert np.all(found.pixels >= DUPLICATE_PIXELS)
    blind = near_duplicates(values.astype(np.float32), neighbours, uris, splits, "pixels",
                            read=lambda uri: None)  # no pixels: the standout rule decides
    assert len(blind.a) and np.all(np.isnan(blind.pixels))
