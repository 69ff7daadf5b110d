"""`--redistribute` (a Reshuffle before decoding, for cluster runners) changes where images are
decoded, never what is committed."""

from __future__ import annotations

from beam_jobs.extract import pipeline as extract
from beam_jobs.runs import read as runs
from tests.helpers.images import write_idx
from tests.helpers.same_run import assert_same_run


def test_redistributed_extract_commits_the_same_run(tmp_path, tiny_backbone):
    source = write_idx(str(tmp_path / "idx"), {"train": 24, "t10k": 6})
    for name, extra in (("plain", []), ("redistributed", ["--redistribute"])):
        extract.run([f"--source=idx:{source}", f"--output={tmp_path / name}",
                     f"--backbone={tiny_backbone}", "--num_shards=2", "--no_progress", *extra])
    [plain] = runs.committed_runs(str(tmp_path / "plain"))
    [redistributed] = runs.committed_runs(str(tmp_path / "redistributed"))
    assert assert_same_run(redistributed, plain)["rows"] == 30
