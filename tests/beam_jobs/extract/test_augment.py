"""Cached augmented views and mirrors: seeded pixels, label-preserving ops, and an extraction
whose runs hold images + views while every count of images stays what it was."""

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from beam_jobs import backbones
from beam_jobs.cli.launch import main
from beam_jobs.extract import pipeline as extract
from beam_jobs.extract.stages import augment
from beam_jobs.extract.stages.inference import BackboneModelHandler
from beam_jobs.runs import read as runs
from beam_jobs.runs import verify
from beam_jobs.sources.elements import ModelInput
from schemas import record
from tests.helpers import REPO_ROOT
from tests.helpers.images import class_image, write_folder, write_idx

DEFAULT, NO_FLIP = augment.POLICIES["default"], augment.POLICIES["no_flip"]


def _photo(size: int = 32, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def _left_dark_right_bright(size: int = 32) -> np.ndarray:
    image = np.full((size, size, 3), 30, np.uint8)
    image[:, size // 2:] = 220
    return image


def test_same_image_and_view_give_identical_pixels_in_another_process():
    here = augment.augment(_photo(), "abc", 2, DEFAULT)
    code = ("import sys, numpy as np; from beam_jobs.extract.stages import augment; "
            "rng = np.random.default_rng(3); "
            "photo = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8); "
            "sys.stdout.buffer.write(augment.augment(photo, 'abc', 2, "
            "augment.POLICIES['default']).tobytes())")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True,
                           cwd=REPO_ROOT).stdout
    assert here.tobytes() == there
    np.testing.assert_array_equal(here, augment.augment(_photo(), "abc", 2, DEFAULT))


def test_views_differ_from_the_original_and_from_each_other():
    photo = _photo()
    views = [augment.augment(photo, "abc", v, DEFAULT) for v in (1, 2, 3)]
    views.append(augment.augment(photo, "abd", 1, DEFAULT))  # another image, same view index
    for i, view in enumerate(views):
        assert view.shape == photo.shape and view.dtype == np.uint8
        assert not np.array_equal(view, photo)
        assert all(not np.array_equal(view, other) for other in views[i + 1:])


def test_views_stay_close_to_the_image_they_augment():
    """Label-preserving: a mild crop and jitter, so the content stays where it was."""
    image = _left_dark_right_bright()
    for view in range(1, 20):
        pixels = augment.augment(image, f"id{view}", view, NO_FLIP).astype(float)
        left, right = pixels[:, :12].mean(), pixels[:, -12:].mean()
        assert left < 60 and right > 170, (view, left, right)


def test_no_flip_never_flips_and_default_sometimes_does():
    image = _left_dark_right_bright()

    def flipped(policy) -> int:
        views = [augment.augment(image, f"img{i}", 1, policy) for i in range(40)]
        return sum(v[:, :16].mean() > v[:, 16:].mean() for v in views)

    assert flipped(NO_FLIP) == 0
    assert 5 < flipped(DEFAULT) < 35


def test_mirror_is_the_left_right_flip_of_the_backbone_input(tiny_backbone):
    backbone = backbones.load(tiny_backbone)  # S = 16
    native = class_image(1, 0, size=12)  # travels at native size, enlarged with its batch
    photo = _photo(16)
    for pixels in (native, photo):
        item = ModelInput("id", "u", "cat", "validation", pixels)
        views = augment.views_of(item, 16, "squash", 2, DEFAULT, with_mirror=True)
        assert [v.view for v in views] == [0, record.MIRROR_VIEW]  # no augmented views
        assert views[0] is item  # the original travels unchanged
        fed = BackboneModelHandler(backbone).resize_batch([pixels])[0]  # what view 0 is fed
        np.testing.assert_array_equal(views[1].image, np.fliplr(fed))
    train = augment.views_of(ModelInput("id", "u", "cat", "train", native), 16, "squash", 2,
                             DEFAULT, with_mirror=False)
    assert [v.view for v in train] == [0, 1, 2]
    assert all(v.image.shape == (16, 16, 3) for v in train[1:])


def _argv(source: str, out: str, backbone: str, *extra: str) -> list[str]:
    return [f"--source={source}", f"--output={out}", f"--backbone={backbone}",
            "--num_shards=1", "--no_progress", *extra]


@pytest.mark.parametrize("flags, sentence", [
    (["--augment_policy=no_flip", "--mirror_views"], "forbids"),
    (["--augment_views=-1"], "--augment_views=-1 must be at least 0"),
])
def test_impossible_view_flags_exit_2_with_one_sentence(tmp_path, capsys, tiny_backbone, flags,
                                                        sentence):
    write_idx(str(tmp_path / "idx"), {"train": 6})
    argv = _argv(f"idx:{tmp_path / 'idx'}", str(tmp_path / "out"), tiny_backbone, *flags)
    assert main(extract.run, argv) == 2
    assert sentence in capsys.readouterr().err


def _rows(run: runs.Run) -> list[dict]:
    return [row for split in record.SPLITS for shard in run.shards(split, "parquet")
            for row in pq.read_table(shard).to_pylist()]


def _views_by_image(rows: list[dict]) -> dict[tuple[str, str], list[int]]:
    found: dict[tuple[str, str], list[int]] = {}
    for row in rows:
        found.setdefault((row[record.SPLIT], row[record.IMAGE_ID]), []).append(row[record.VIEW])
    return found


@pytest.fixture(scope="module")
def with_views(tmp_path_factory, tiny_backbone) -> runs.Run:
    tmp = tmp_path_factory.mktemp("views")
    write_idx(str(tmp / "idx"), {"train": 24, "t10k": 6})
    extract.run(_argv(f"idx:{tmp / 'idx'}", str(tmp / "out"), tiny_backbone,
                      "--splits=75,25,0", "--augment_views=2", "--mirror_views"))
    [run] = runs.committed_runs(str(tmp / "out"))
    return run


@pytest.mark.slow
def test_train_images_get_k_views_and_a_mirror_the_others_a_mirror(with_views):
    by_image = _views_by_image(_rows(with_views))
    assert len(by_image) == 30
    for (split, _), views in by_image.items():
        want = [-1, 0, 1, 2] if split == "train" else [-1, 0]
        assert sorted(views) == want, split
    manifest = with_views.manifest
    images = {s: sum(manifest["counts"][s].values()) for s in record.SPLITS}
    assert images["test"] == 6 and sum(images.values()) == 30 == manifest["accepted"]
    assert manifest["view_counts"] == {
        "train": {"-1": images["train"], "0": images["train"], "1": images["train"],
                  "2": images["train"]},
        "validation": {"-1": images["validation"], "0": images["validation"]},
        "test": {"-1": 6, "0": 6}}
    assert manifest["views"]["augment_views"] == 2 and manifest["views"]["mirror"] is True
    assert manifest["views"]["policy"]["name"] == "default"
    assert with_views.count("train") == images["train"]  # readers of counts see images


def test_run_with_views_passes_the_on_disk_check(with_views):
    found, problems = verify.on_disk(with_views.path)
    assert problems == []
    want = verify.expected_records(with_views.manifest)
    assert found["tfrecord"] == found["parquet"] == want
    assert want["train"] == 4 * with_views.count("train")


def test_mirror_record_holds_the_backbone_features_of_the_flipped_input(with_views,
                                                                        tiny_backbone):
    backbone = backbones.load(tiny_backbone)
    rows = [r for r in _rows(with_views) if r[record.SPLIT] == "test"]
    by_view = {(r[record.URI], r[record.VIEW]): np.asarray(r[record.TRANSFER_VALUES])
               for r in rows}
    uri = rows[0][record.URI]  # idx:t10k-images-idx3-ubyte.gz#N
    index = int(uri.rsplit("#", 1)[1])
    image = class_image(index % 3, 50_000 + index)[..., 0:1]  # as write_idx made it
    fed = BackboneModelHandler(backbone).resize_batch([image])[0]
    np.testing.assert_allclose(by_view[uri, 0], backbone(fed[np.newaxis])[0], atol=1e-5)
    np.testing.assert_allclose(by_view[uri, -1], backbone(np.fliplr(fed)[np.newaxis])[0],
                               atol=1e-5)


def test_transform_is_analysed_over_the_train_originals_only(with_views):
    import tensorflow_transform as tft

    originals = np.stack([r[record.TRANSFER_VALUES] for r in _rows(with_views)
                          if r[record.SPLIT] == "train" and r[record.VIEW] == 0])
    output = tft.TFTransformOutput(with_views.path)
    transformed = output.transform_raw_features({
        record.LABEL: tf.constant(["0"] * len(originals)),
        record.TRANSFER_VALUES: tf.constant(originals)})[record.TRANSFER_VALUES].numpy()
    np.testing.assert_allclose(transformed.mean(axis=0), 0.0, atol=1e-4)


@pytest.mark.slow
def test_chunked_incremental_job_carries_views_in_every_chunk(tmp_path, tiny_backbone):
    root = write_folder(str(tmp_path / "images"), per_class=4)
    out = str(tmp_path / "out")
    argv = _argv(f"folder:{root}", out, tiny_backbone, "--splits=60,20,20", "--commit_every=5",
                 "--augment_views=1", "--mirror_views", "--incremental")
    summary = extract.run(argv)
    assert summary["chunks"] == 3 and summary["accepted"] == 12
    committed = runs.committed_runs(out)
    for run in committed:
        for (split, _), views in _views_by_image(_rows(run)).items():
            assert sorted(views) == ([-1, 0, 1] if split == "train" else [-1, 0])
        assert run.manifest["views"]["augment_views"] == 1
    assert sum(summary["view_counts"]["train"].values()) == 3 * sum(
        summary["counts"]["train"].values())
    again = extract.run(argv)  # views share their image's id: nothing new
    assert again["run_id"] is None and again["already_extracted"] == 12


@pytest.mark.slow
def test_run_without_view_flags_holds_only_originals(tmp_path, tiny_backbone):
    write_idx(str(tmp_path / "idx"), {"train": 10, "t10k": 4})
    manifest = extract.run(_argv(f"idx:{tmp_path / 'idx'}", str(tmp_path / "out"),
                                 tiny_backbone))
    [run] = runs.committed_runs(str(tmp_path / "out"))
    rows = _rows(run)
    assert len(rows) == 14 and {r[record.VIEW] for r in rows} == {0}
    assert manifest["views"] == {"augment_views": 0, "mirror": False,
                                 "policy": DEFAULT.describe()}
    assert manifest["view_counts"] == {s: {"0": run.count(s)} if run.count(s) else {}
                                       for s in record.SPLITS}


def test_failed_batch_letters_each_image_once_not_each_view():
    batch = [(("id1", "u1", "cat", "train", view), None) for view in (0, 1, -1)]
    batch += [(("id2", "u2", "cat", "train", 2), None)]  # its original passed in another batch
    letters = extract._failed_batch_to_dead_letters((batch, RuntimeError("boom")))
    assert [json.loads(line)["uri"] for line in letters] == ["u1"]


def test_view_flags_change_the_job_key_only_when_views_are_asked_for():
    from types import SimpleNamespace

    from beam_jobs.runs import extract_jobs as jobs

    def key(**flags) -> str:
        base = dict(source="idx:/d", augment_views=0, augment_policy="default",
                    mirror_views=False)
        return jobs.job_key(SimpleNamespace(**{**base, **flags}), "fp")

    assert key() == key(augment_policy="no_flip")  # no views: the policy extracts nothing
    assert key() == jobs.job_key(SimpleNamespace(source="idx:/d"), "fp")  # as before views
    assert len({key(), key(augment_views=2), key(mirror_views=True),
                key(augment_views=2, augment_policy="no_flip")}) == 4
