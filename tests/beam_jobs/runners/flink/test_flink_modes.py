"""Chunked, incremental and augmented extractions on Flink commit the DirectRunner's runs."""

from __future__ import annotations

import os

import pytest

from beam_jobs.extract import pipeline as extract
from beam_jobs.runs import read as runs
from tests.beam_jobs.runners.flink.conftest import FLINK_CONFIG, LONG
from tests.beam_jobs.runners.flink.test_flink_cluster import write_images_with_bad_files
from tests.helpers import images
from tests.helpers.same_run import assert_same_run

pytestmark = [pytest.mark.slow, LONG]


def _both(tmp_path, source: str, *flags: str) -> tuple[list[runs.Run], list[runs.Run]]:
    """Extract `source` on Flink and on the DirectRunner (each into its own output)."""
    for runner, extra in (("flink", [f"--config={FLINK_CONFIG}"]), ("direct", [])):
        extract.run([*extra, f"--source=folder:{source}", f"--output={tmp_path / runner}",
                     *flags])
    by_chunk = lambda run: (run.manifest["job"]["chunk"], run.run_id)
    return (sorted(runs.committed_runs(str(tmp_path / "flink")), key=by_chunk),
            sorted(runs.committed_runs(str(tmp_path / "direct")), key=by_chunk))


def _assert_pairwise_same(flink: list[runs.Run], direct: list[runs.Run]) -> list[dict]:
    assert len(flink) == len(direct)
    return [assert_same_run(a, b) for a, b in zip(flink, direct)]


def test_chunked_extract_commits_the_same_runs(flink_cluster, tiny_backbone, tmp_path):
    source = write_images_with_bad_files(str(tmp_path / "images"), per_class=20)
    flink, direct = _both(tmp_path, source, f"--backbone={tiny_backbone}", "--num_shards=1",
                          "--commit_every=25", "--no_progress")
    figures = _assert_pairwise_same(flink, direct)
    assert len(figures) == 3 and sum(f["inputs"] for f in figures) == 63


def test_incremental_extract_commits_the_same_delta(flink_cluster, tiny_backbone, tmp_path):
    root = str(tmp_path / "images")
    images.write_folder(root, per_class=10)
    flags = [f"--backbone={tiny_backbone}", "--num_shards=1", "--incremental", "--no_progress"]
    _both(tmp_path, root, *flags)
    images.write_folder(str(tmp_path / "more"), per_class=5, size=14)  # new bytes: a delta
    for label in os.listdir(tmp_path / "more"):
        for name in os.listdir(tmp_path / "more" / label):
            os.replace(tmp_path / "more" / label / name, os.path.join(root, label, "new-" + name))
    flink, direct = _both(tmp_path, root, *flags)
    figures = _assert_pairwise_same(flink, direct)
    assert len(figures) == 2 and figures[1]["rows"] == 15


def test_augmented_views_are_the_same_on_flink(flink_cluster, tiny_backbone, tmp_path):
    source = write_images_with_bad_files(str(tmp_path / "images"), per_class=10)
    flink, direct = _both(tmp_path, source, f"--backbone={tiny_backbone}", "--num_shards=1",
                          "--augment_views=2", "--no_progress")
    [figures] = _assert_pairwise_same(flink, direct)
    assert figures["rows"] > 30  # train images come with two views each
