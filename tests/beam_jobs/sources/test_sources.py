"""Each source kind on data the test makes: what it yields, with which label and split."""

import os
import pickle

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from beam_jobs.cli.errors import UserError
from beam_jobs.sources import KeepFirst, SourceConfig, read_images, reading
from beam_jobs.sources.cifar10 import load_batch
from tests.helpers.images import (
    class_image,
    png_bytes,
    tf_example,
    write_cifar10,
    write_idx,
    write_manifest,
    write_tfrecord,
)


def _summary(image) -> tuple:
    """What a test can compare: (uri tail, label, split, rejected reason or content kind)."""
    tail = image.uri.replace("\\", "/").rsplit("/", 1)[-1]
    content = image.rejected[0] if image.rejected else (
        "bytes" if image.encoded is not None else f"pixels{tuple(image.pixels.shape)}")
    return tail, image.label, image.source_split, content


_COLLECTED: list = []  # module-level: the in-process DirectRunner pickles functions by name


def _collect(item) -> None:
    _COLLECTED.append(item)


def _run(spec: str, config: SourceConfig, convert) -> list:
    _COLLECTED.clear()
    with beam.Pipeline() as p:
        p | read_images(spec, config=config) | beam.Map(lambda image: _collect(convert(image)))
    return list(_COLLECTED)


def _read(spec: str, config: SourceConfig = SourceConfig()) -> list[tuple]:
    return sorted(_run(spec, config, _summary), key=str)


def _write(path, data: bytes) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


PNG = png_bytes(np.repeat(class_image(0, 0), 3, axis=-1))


def test_folder_reads_nested_folders_any_case_extension_and_skips_hidden(tmp_path):
    root = tmp_path / "images"
    _write(root / "cat" / "a.png", PNG)
    _write(root / "cat" / "indoor" / "deep" / "B.PNG", PNG)
    _write(root / "dog" / "c.JpEg", PNG)
    _write(root / "dog" / "drawing.svg", b"<svg/>")          # looks like an image: an input
    _write(root / "dog" / ".d.png", PNG)                     # hidden file
    _write(root / "dog" / ".thumbs" / "e.png", PNG)          # hidden folder
    _write(root / "dog" / "README.txt", b"notes")           # not an image's extension
    _write(root / "f.png", PNG)                              # no class folder
    assert _read(f"folder:{root}") == sorted([
        ("B.PNG", "cat", None, "bytes"), ("a.png", "cat", None, "bytes"),
        ("c.JpEg", "dog", None, "bytes"), ("drawing.svg", "dog", None, "bytes")], key=str)


def _image_file(path, fmt: str, **params) -> str:
    from PIL import Image

    picture = Image.fromarray(np.repeat(class_image(1, 2, 16), 3, axis=-1))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    picture.save(path, format=fmt, **params)
    return str(path)


def test_folder_takes_jpeg_2000_mpo_and_any_extension_pillow_opens(tmp_path):
    from PIL import Image

    from beam_jobs.images.decode import decode_rgb

    root = tmp_path / "images"
    second = Image.fromarray(np.repeat(class_image(2, 3, 16), 3, axis=-1))
    files = [_image_file(root / "cat" / "photo.jp2", "JPEG2000"),
             _image_file(root / "cat" / "codestream.J2K", "JPEG2000"),
             _image_file(root / "cat" / "camera.MPO", "MPO", save_all=True,
                         append_images=[second]),
             _image_file(root / "dog" / "old.TGA", "TGA"),
             _image_file(root / "dog" / "screen.QOI", "QOI")]
    assert _read(f"folder:{root}") == sorted([
        ("photo.jp2", "cat", None, "bytes"), ("codestream.J2K", "cat", None, "bytes"),
        ("camera.MPO", "cat", None, "bytes"), ("old.TGA", "dog", None, "bytes"),
        ("screen.QOI", "dog", None, "bytes")], key=str)
    for path in files:  # and each decodes to the picture it holds
        assert decode_rgb(open(path, "rb").read()).shape == (16, 16, 3), path


def test_folder_extensions_come_from_pillow_plus_documents_mistaken_for_images():
    from PIL import Image

    from beam_jobs.sources import folder

    Image.init()
    extensions = folder.image_extensions()
    assert {".jp2", ".j2k", ".mpo", ".qoi", ".jpg", ".png", ".webp", ".tif"} <= extensions
    assert {".svg", ".pdf", ".heic", ".avif"} <= extensions  # read, then dead-lettered
    assert not {".txt", ".csv", ".json", ".md", ".palm"} & extensions  # .palm: Pillow saves only


@pytest.mark.parametrize("parts, key", [
    (["cat", "notes.TXT"], ".txt"),
    (["cat", ".DS_Store"], ".DS_Store"),
    (["cat", "LICENSE"], "(none)"),
    (["cat", "._IMG_1.jpg"], ".jpg (hidden)"),
    (["cat", ".thumbs", "a.png"], ".png (hidden)"),
    (["stray.png"], ".png (at the root)"),
    (["labels.csv"], ".csv"),
])
def test_skipped_file_key_names_extension_hidden_files_and_why_an_image_was_left(parts, key):
    from beam_jobs.sources.folder import skipped_file_key

    assert skipped_file_key(parts) == key


def test_folder_counts_every_file_that_is_not_an_input(tmp_path):
    from beam_jobs.sources import skipped_files

    root = tmp_path / "images"
    _write(root / "cat" / "a.png", PNG)
    for name in ("a.txt", "b.txt", "sub/c.TXT", ".DS_Store", "LICENSE", "Makefile", ".hid.png"):
        _write(root / "cat" / name, b"x")
    _write(root / "stray.png", PNG)
    _write(root / "README.md", b"x")
    with beam.Pipeline() as p:
        counts = (p | skipped_files(f"folder:{root}")
                  | beam.combiners.Count.PerElement())
        assert_that(counts, equal_to([(".txt", 3), (".DS_Store", 1), ("(none)", 2),
                                      (".png (hidden)", 1), (".png (at the root)", 1),
                                      (".md", 1)]))
    with beam.Pipeline() as p:  # other sources have no files besides their inputs
        assert_that(p | skipped_files(f"idx:{root}"), equal_to([]))


def test_manifest_csv_with_header_resolves_relative_uris_and_keeps_splits(tmp_path):
    _write(tmp_path / "data" / "img" / "a.png", PNG)
    elsewhere = _write(tmp_path / "elsewhere" / "b.png", PNG)
    manifest = write_manifest(str(tmp_path / "data" / "list.csv"), [
        ("img/a.png", "cat", "test"), (elsewhere, "dog", "val"), ("img/gone.png", "cat", ""),
        ("img/a.png", "cat", "holdout")], header=True)
    assert _read(f"manifest:{manifest}") == sorted([
        ("a.png", "cat", "test", "bytes"), ("b.png", "dog", "validation", "bytes"),
        ("gone.png", "cat", None, "unreadable"),
        ("a.png,cat,holdout", "", None, "unreadable")], key=str)  # the bad line itself


def test_manifest_jsonl_lines(tmp_path):
    _write(tmp_path / "x" / "a.png", PNG)
    _write(tmp_path / "x" / "b.png", PNG)
    manifest = write_manifest(str(tmp_path / "list.jsonl"), [("x/a.png", "cat"),
                                                             ("x/b.png", "dog", "train")])
    assert _read(f"manifest:{manifest}") == sorted([
        ("a.png", "cat", None, "bytes"), ("b.png", "dog", "train", "bytes")], key=str)


def test_manifest_reads_a_file_listed_twice_once(tmp_path):
    _write(tmp_path / "x" / "a.png", PNG)
    _write(tmp_path / "x" / "b.png", PNG)
    manifest = write_manifest(str(tmp_path / "list.csv"), [
        ("x/a.png", "cat"), ("x/a.png", "cat"), ("x/b.png", "cat"), ("x/b.png", "dog")])
    assert _read(f"manifest:{manifest}") == sorted([
        ("a.png", "cat", None, "bytes"), ("a.png", "cat", None, "duplicate"),
        ("b.png", "cat", None, "conflicting_labels"),
        ("b.png", "dog", None, "conflicting_labels")], key=str)


def test_missing_manifest_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        _read(f"manifest:{tmp_path / 'nope.csv'}")


def test_tfrecord_default_keys_split_from_file_name_and_bad_records(tmp_path):
    write_tfrecord(str(tmp_path / "train-00000-of-00002.tfrecord"), [
        tf_example({"image/encoded": PNG, "image/class/text": "cat", "image/class/label": 3}),
        tf_example({"image_raw": PNG, "label": 7}),
        tf_example({"label": 1}),                              # no image
        b"not a protobuf at all \xff\xfe"])
    write_tfrecord(str(tmp_path / "test-00001-of-00002.tfrecord.gz"),
                   [tf_example({"image/encoded": PNG, "image/class/label": 2})], gzip_=True)
    data = open(tmp_path / "train-00000-of-00002.tfrecord", "rb").read()
    _write(tmp_path / "cut.tfrecord", data[: len(data) - 10])
    assert _read(f"tfrecord:{tmp_path}/*.tfrecord*") == sorted([
        ("train-00000-of-00002.tfrecord#0", "cat", "train", "bytes"),
        ("train-00000-of-00002.tfrecord#1", "7", "train", "bytes"),
        ("train-00000-of-00002.tfrecord#2", "", None, "not_an_image"),
        ("train-00000-of-00002.tfrecord#3", "", None, "unreadable"),
        ("test-00001-of-00002.tfrecord.gz#0", "2", "test", "bytes"),
        ("cut.tfrecord#0", "cat", None, "bytes"), ("cut.tfrecord#1", "7", None, "bytes"),
        ("cut.tfrecord#2", "", None, "not_an_image"),
        ("cut.tfrecord#3", "", None, "truncated")], key=str)


def test_tfrecord_feature_keys_are_configurable(tmp_path):
    write_tfrecord(str(tmp_path / "other.tfrecord"),
                   [tf_example({"jpeg": PNG, "species": "owl", "label": 1})])
    config = SourceConfig(tfrecord_image_keys=("jpeg",), tfrecord_label_keys=("species",))
    assert _read(f"tfrecord:{tmp_path}/other.tfrecord", config) == [
        ("other.tfrecord#0", "owl", None, "bytes")]


def test_cifar10_batches_with_class_names_and_test_split(tmp_path):
    write_cifar10(str(tmp_path), {"data_batch_1": 3, "data_batch_2": 2, "test_batch": 2})
    found = _read(f"cifar10:{tmp_path}")
    assert len(found) == 7
    assert ("cifar10:test_batch#1", "class1", "test", "pixels(32, 32, 3)") in found
    assert sum(1 for f in found if f[2] == "train") == 5


def test_cifar10_pixels_come_out_height_width_channel(tmp_path):
    write_cifar10(str(tmp_path), {"data_batch_1": 1})
    pixels = _run(f"cifar10:{tmp_path}", SourceConfig(), lambda image: image.pixels)
    np.testing.assert_array_equal(pixels[0], class_image(0, 1000 * len("data_batch_1"), 32, 3))


def test_cifar10_batch_refuses_pickles_that_would_run_code():
    payload = pickle.dumps(os.system)
    with pytest.raises(UserError, match="refusing posix.system"):
        load_batch(payload)


def test_idx_reads_colour_images_many_classes_and_raw_files(tmp_path):
    write_idx(str(tmp_path), {"train": 24, "t10k": 4}, classes=12, gz=False, channels=3)
    found = _read(f"idx:{tmp_path}")
    assert len(found) == 28
    assert {f[1] for f in found} == {str(i) for i in range(12)}
    assert {f[3] for f in found} == {"pixels(12, 12, 3)"}
    assert sum(1 for f in found if f[2] == "test") == 4


def test_idx_single_channel_idx4(tmp_path):
    write_idx(str(tmp_path), {"train": 3}, channels=1)
    assert {f[3] for f in _read(f"idx:{tmp_path}")} == {"pixels(12, 12, 1)"}


def test_transient_read_errors_are_retried_then_succeed(tmp_path, monkeypatch):
    path = _write(tmp_path / "a.png", PNG)
    calls, real = [], reading._open_and_read

    def flaky(uri, compression):
        calls.append(uri)
        if len(calls) < 3:
            raise OSError("503 Service Unavailable")
        return real(uri, compression)

    monkeypatch.setattr(reading, "_open_and_read", flaky)
    delays = []
    assert reading.read_with_retry(path, sleep=delays.append) == PNG
    assert len(calls) == 3 and len(delays) == 2 and delays[1] > delays[0] * 0.6


def test_file_that_stays_unreadable_becomes_unusable_not_a_crash(tmp_path, monkeypatch):
    path = _write(tmp_path / "a.png", PNG)

    def broken(uri, compression):
        raise OSError("connection reset")

    monkeypatch.setattr(reading, "_open_and_read", broken)
    monkeypatch.setattr(reading.time, "sleep", lambda s: None)
    image = reading.read_source_image(path, "cat")
    assert image.rejected[0] == "unreadable" and "4 attempt" in image.rejected[1]


def test_missing_file_is_not_retried(tmp_path):
    delays = []
    with pytest.raises(reading.ReadFailure, match="after 1 attempt"):
        reading.read_with_retry(str(tmp_path / "gone.png"), sleep=delays.append)
    assert delays == []


def test_limit_by_split_keeps_first_uris_of_capped_splits_only():
    from beam_jobs.sources.reading import Candidate

    items = [Candidate(f"u{i}", "x", "train" if i % 2 else "test") for i in range(10)]
    with beam.Pipeline() as p:
        kept = (p | beam.Create(items) | KeepFirst({"train": 2})
                | beam.Map(lambda c: c.uri))
        assert_that(kept, equal_to(["u1", "u3", "u0", "u2", "u4", "u6", "u8"]))


def test_folder_source_retries_a_flaky_file_and_dead_letters_a_broken_one(tmp_path, monkeypatch):
    root = tmp_path / "images"
    for name in ("flaky.png", "broken.png", "fine.png"):
        _write(root / "cat" / name, PNG)
    failures, real = {"flaky.png": 2, "broken.png": 99}, reading._open_and_read

    def sometimes_failing(uri, compression):
        name = os.path.basename(uri)
        if failures.get(name, 0) > 0:
            failures[name] -= 1
            raise OSError("503 Service Unavailable")
        return real(uri, compression)

    monkeypatch.setattr(reading, "_open_and_read", sometimes_failing)
    monkeypatch.setattr(reading.time, "sleep", lambda s: None)
    assert _read(f"folder:{root}") == sorted([
        ("broken.png", "cat", None, "unreadable"), ("fine.png", "cat", None, "bytes"),
        ("flaky.png", "cat", None, "bytes")], key=str)
