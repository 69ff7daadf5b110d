"""The commit counts what the files hold and refuses a run whose sinks dropped output."""

import gzip
import os

import pytest

from beam_jobs.cli.errors import UserError
from beam_jobs.cli.launch import main
from beam_jobs.extract import driver
from beam_jobs.extract import pipeline as extract
from beam_jobs.runs import commit, verify
from beam_jobs.runs import read as runs
from tests.helpers.images import write_idx


def _argv(tmp_path, backbone: str) -> list[str]:
    return [f"--source=idx:{tmp_path / 'idx'}", f"--output={tmp_path / 'out'}",
            f"--backbone={backbone}", "--num_shards=1", "--no_progress"]


def _drop_after_pipeline(monkeypatch, damage) -> None:
    """Damage the run's files after the pipeline wrote them, before the commit reads them."""
    real = commit.read_stats

    def read_stats_after_damage(run_dir):
        damage(run_dir)
        return real(run_dir)

    monkeypatch.setattr(driver.commit, "read_stats", read_stats_after_damage)


def _first(run_dir: str, pattern: str) -> str:
    return sorted(m.path for m in runs.FileSystems.match([runs.join(run_dir, pattern)])[0]
                  .metadata_list)[0]


def test_committed_run_files_hold_exactly_what_the_manifest_counts(tmp_path, tiny_backbone):
    write_idx(str(tmp_path / "idx"), {"train": 30, "t10k": 10})
    manifest = extract.run(_argv(tmp_path, tiny_backbone))
    [run] = runs.committed_runs(str(tmp_path / "out"))
    found, problems = verify.on_disk(run.path)
    assert problems == []
    for fmt in ("tfrecord", "parquet"):
        assert found[fmt] == {s: run.count(s) for s in ("train", "validation", "test")}
    assert found["dead_letters"]["lines"] == manifest["rejected"]


def test_zero_byte_parquet_shard_refuses_the_commit_with_one_sentence(
        tmp_path, tiny_backbone, monkeypatch, capsys):
    write_idx(str(tmp_path / "idx"), {"train": 30, "t10k": 10})

    def empty_parquet(run_dir):  # what a runner that drops finish_bundle output leaves
        with open(_first(run_dir, "parquet/train-*.parquet"), "wb"):
            pass

    _drop_after_pipeline(monkeypatch, empty_parquet)
    assert main(extract.run, _argv(tmp_path, tiny_backbone)) == 2
    err = capsys.readouterr().err
    assert "do not hold what the job counted" in err and "train parquet shards hold 0" in err
    assert runs.committed_runs(str(tmp_path / "out")) == []


@pytest.mark.slow
def test_tfrecord_shard_missing_records_refuses_the_commit(tmp_path, tiny_backbone,
                                                           monkeypatch):
    write_idx(str(tmp_path / "idx"), {"train": 30, "t10k": 10})

    def drop_last_record(run_dir):
        path = _first(run_dir, "train-*.tfrecord.gz")
        with gzip.open(path, "rb") as f:
            data = f.read()
        offsets, offset = [], 0
        while offset < len(data):
            offsets.append(offset)
            offset += 16 + int.from_bytes(data[offset:offset + 8], "little")
        with gzip.open(path, "wb") as f:
            f.write(data[:offsets[-1]])

    _drop_after_pipeline(monkeypatch, drop_last_record)
    with pytest.raises(UserError, match=r"train tfrecord shards hold \d+ records, the tallies"):
        extract.run(_argv(tmp_path, tiny_backbone))
    assert runs.committed_runs(str(tmp_path / "out")) == []
    assert not os.listdir(tmp_path / "out" / "runs")  # left uncommitted, and cleaned away


def test_record_cut_short_is_reported_not_counted(tmp_path):
    path = tmp_path / "train-00000-of-00001.tfrecord.gz"
    with gzip.open(path, "wb") as f:
        f.write((100).to_bytes(8, "little") + b"\0" * 4 + b"x" * 10)
    with pytest.raises(ValueError, match="cut short"):
        verify.tfrecord_records(str(path))


@pytest.mark.slow
def test_missing_shard_of_a_run_with_views_refuses_the_commit(tmp_path, tiny_backbone,
                                                              monkeypatch):
    write_idx(str(tmp_path / "idx"), {"train": 20, "t10k": 6})
    _drop_after_pipeline(monkeypatch, lambda run_dir: os.remove(
        _first(run_dir, "test-*.tfrecord.gz")))
    with pytest.raises(UserError, match=r"test tfrecord shards hold 0 records, the tallies 12"):
        extract.run(_argv(tmp_path, tiny_backbone) + ["--augment_views=1", "--mirror_views"])
    assert runs.committed_runs(str(tmp_path / "out")) == []


def test_tallies_of_images_and_views_expect_every_record():
    tallies = {"counts": {"train": {"a": 3, "b": 2}, "test": {"a": 1}},
               "view_counts": {"train": {"-1": 5, "0": 5, "1": 5}, "test": {"-1": 1, "0": 1}}}
    assert verify.expected_records(tallies) == {"train": 15, "validation": 0, "test": 2}
    del tallies["view_counts"]  # written before views existed: the images are the records
    assert verify.expected_records(tallies) == {"train": 5, "validation": 0, "test": 1}
    problems: list[str] = []
    verify._images_match_originals({"counts": {"train": {"a": 3}},
                                    "view_counts": {"train": {"0": 2, "1": 3}}}, problems)
    assert problems == ["train counts 3 images but 2 view 0 records"]
