"""The report's helpers on their own: images read back from record uris for errors.png."""

from __future__ import annotations

import numpy as np

from beam_jobs.runs.read import Run
from beam_jobs.sources.idx import find_parts, read_bytes, read_idx
from tests.helpers.images import png_bytes, write_idx
from trainer.report.thumbnails import ThumbnailLoader


def test_idx_uris_and_files_are_read_back_and_other_uris_give_none(tmp_path):
    folder = write_idx(str(tmp_path / "idx"), {"train": 5, "t10k": 3}) or str(tmp_path / "idx")
    picture = np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    (tmp_path / "a.png").write_bytes(png_bytes(picture))
    loader = ThumbnailLoader([Run(str(tmp_path / "run"), {"source": f"idx:{folder}"})])

    expected = read_idx(read_bytes(find_parts(folder)["t10k"][0]))[2]
    np.testing.assert_array_equal(loader.load("idx:t10k#2"), np.stack([expected] * 3, -1))
    np.testing.assert_array_equal(loader.load(str(tmp_path / "a.png")), picture)
    assert loader.load("idx:t10k#99") is None
    assert loader.load("idx:nopart#0") is None
    assert loader.load("shards.tfrecord#17") is None
    assert loader.load(str(tmp_path / "missing.png")) is None
