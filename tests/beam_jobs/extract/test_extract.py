"""The extract job end to end on tiny data: committed layout, accounting, dead letters."""

import json
import os

import pytest
import tensorflow as tf

import schemas
from beam_jobs.cli.launch import main
from beam_jobs.extract import pipeline as extract
from beam_jobs.runs import read as runs
from schemas import record
from tests.helpers.images import write_folder, write_idx


def _extract(source: str, out: str, backbone: str, *extra: str) -> dict:
    return extract.run([f"--source={source}", f"--output={out}", f"--backbone={backbone}",
                        "--num_shards=2", *extra])


def _rows(run: runs.Run, split: str) -> list[dict]:
    rows = []
    for shard in run.shards(split):
        for raw in tf.data.TFRecordDataset(shard, compression_type="GZIP"):
            rows.append(schemas.parse_tf_example(raw.numpy()))
    return rows


def test_idx_run_is_committed_with_every_artifact(tmp_path, tiny_backbone):
    write_idx(str(tmp_path / "idx"), {"train": 60, "t10k": 15})
    manifest = _extract(f"idx:{tmp_path / 'idx'}", str(tmp_path / "out"), tiny_backbone)
    [run] = runs.committed_runs(str(tmp_path / "out"))
    for name in ("_SUCCESS", "manifest.json", "labels.txt", "schema.pbtxt"):
        assert os.path.exists(os.path.join(run.path, name)), name
    assert not os.path.exists(os.path.join(run.path, "_stats.json"))
    assert manifest["inputs"] == 75 == manifest["accepted"] + manifest["rejected"]
    assert run.count("test") == 15  # the source's own t10k split wins
    assert run.count("train") + run.count("validation") == 60
    assert run.count("validation") > 0
    assert open(os.path.join(run.path, "labels.txt")).read().split() == ["0", "1", "2"]


@pytest.mark.slow
def test_records_hold_backbone_features_and_consistent_label_ids(tmp_path, tiny_backbone):
    write_idx(str(tmp_path / "idx"), {"train": 30, "t10k": 9})
    _extract(f"idx:{tmp_path / 'idx'}", str(tmp_path / "out"), tiny_backbone)
    [run] = runs.committed_runs(str(tmp_path / "out"))
    rows = _rows(run, "train") + _rows(run, "validation") + _rows(run, "test")
    assert len(rows) == 39 and len({r[record.IMAGE_ID] for r in rows}) == 39
    for row in rows:
        assert row[record.TRANSFER_VALUES].shape == (8,)
        assert run.labels[row[record.LABEL_ID]] == row[record.LABEL]
        assert row[record.BACKBONE] == run.fingerprint
        assert row[record.VIEW] == record.ORIGINAL_VIEW  # no view flags: the images alone
    parquet_rows = sum(len(__import__("pyarrow.parquet").parquet.read_table(p))
                       for s in ("train", "validation", "test") for p in run.shards(s, "parquet"))
    assert parquet_rows == 39


@pytest.mark.slow
def test_split_is_identical_across_runs(tmp_path, tiny_backbone):
    write_idx(str(tmp_path / "idx"), {"train": 40})
    for out in ("a", "b"):
        _extract(f"idx:{tmp_path / 'idx'}", str(tmp_path / out), tiny_backbone)
    splits = []
    for out in ("a", "b"):
        [run] = runs.committed_runs(str(tmp_path / out))
        splits.append({r[record.IMAGE_ID]: s for s in ("train", "validation")
                       for r in _rows(run, s)})
    assert splits[0] == splits[1]


def test_corrupt_and_duplicate_images_become_dead_letters(tmp_path, tiny_backbone):
    root = write_folder(str(tmp_path / "images"), per_class=6)
    with open(os.path.join(root, "cat", "broken.jpg"), "wb") as f:
        f.write(b"<html><body>404 not found</body></html>")
    with open(os.path.join(root, "dog", "0000.png"), "rb") as f:
        dog = f.read()
    with open(os.path.join(root, "dog", "cut.png"), "wb") as f:
        f.write(dog[: len(dog) // 2])
    open(os.path.join(root, "dog", "empty.png"), "wb").close()
    with open(os.path.join(root, "owl", "0000.png"), "rb") as f:
        owl = f.read()
    with open(os.path.join(root, "owl", "copy.png"), "wb") as f:
        f.write(owl)
    with open(os.path.join(root, "cat", "owl-in-disguise.png"), "wb") as f:
        f.write(open(os.path.join(root, "owl", "0001.png"), "rb").read())
    with open(os.path.join(root, "cat", ".hidden.png"), "wb") as f:
        f.write(owl)
    manifest = _extract(f"folder:{root}", str(tmp_path / "out"), tiny_backbone)
    assert manifest["inputs"] == 18 + 5  # the hidden file is not an input
    assert manifest["dead_letters"] == {"not_an_image": 1, "empty": 1, "truncated": 1,
                                        "duplicate": 1, "conflicting_labels": 2}
    assert manifest["accepted"] == 18 - 1  # owl/0001 and its disguise both go
    [run] = runs.committed_runs(str(tmp_path / "out"))
    letters = [json.loads(line) for p in sorted(os.listdir(os.path.join(run.path, "dead_letters")))
               for line in open(os.path.join(run.path, "dead_letters", p))]
    by_uri = {os.path.basename(d["uri"]): d for d in letters}
    assert by_uri["broken.jpg"]["reason"] == "not_an_image"
    assert by_uri["empty.png"]["stage"] == "decode"
    assert by_uri["cut.png"]["reason"] == "truncated"
    assert set(letters[0]) == {"uri", "stage", "reason", "detail"}


def test_failed_run_leaves_nothing_a_reader_would_take_as_complete(tmp_path, tiny_backbone,
                                                                   monkeypatch):
    write_idx(str(tmp_path / "idx"), {"train": 20})

    def lose_an_image(stats):
        raise RuntimeError("Accounting mismatch (simulated)")

    monkeypatch.setattr(extract.commit, "check_accounting", lose_an_image)
    with pytest.raises(RuntimeError):
        _extract(f"idx:{tmp_path / 'idx'}", str(tmp_path / "out"), tiny_backbone)
    assert runs.committed_runs(str(tmp_path / "out")) == []
    assert os.listdir(tmp_path / "out" / "runs") == []


def test_uncommitted_run_folder_is_invisible_and_refused(tmp_path):
    half = tmp_path / "out" / "runs" / "20260101T000000Z-abcdef"
    half.mkdir(parents=True)
    (half / "train-00000-of-00001.tfrecord.gz").write_bytes(b"")
    (half / "manifest.json").write_text("{}")
    assert runs.committed_runs(str(tmp_path / "out")) == []
    with pytest.raises(Exception, match="not a committed run"):
        runs.resolve_runs(str(half))


@pytest.mark.parametrize("args, sentence", [
    (["--source=idx:/nonexistent/dir", "--output=OUT"], "No IDX image files"),
    (["--source=folder:/nonexistent/dir", "--output=OUT"], "does not exist"),
    (["--source=jpegs:/x", "--output=OUT"], "Unknown source kind"),
    (["--source=idx:/x", "--output=OUT", "--backbone=no_such_net"], "Unknown backbone"),
    (["--source=idx:/x", "--output=OUT", "--splits=1,2"], "--splits"),
])
def test_bad_input_exits_2_with_one_sentence(tmp_path, capsys, args, sentence, tiny_backbone):
    args = [a.replace("OUT", str(tmp_path)) for a in args]
    if not any(a.startswith("--backbone") for a in args):
        args.append(f"--backbone={tiny_backbone}")
    assert main(extract.run, args) == 2
    err = capsys.readouterr().err.strip()
    assert sentence in err and len(err.splitlines()) == 1


def test_empty_idx_dataset_exits_2(tmp_path, capsys, tiny_backbone):
    write_idx(str(tmp_path / "idx"), {"train": 0})
    args = [f"--source=idx:{tmp_path / 'idx'}", f"--output={tmp_path / 'out'}",
            f"--backbone={tiny_backbone}"]
    assert main(extract.run, args) == 2
    assert "no images" in capsys.readouterr().err
    assert runs.committed_runs(str(tmp_path / "out")) == []


@pytest.mark.slow
def test_limit_caps_each_source_split_by_its_name(tmp_path, tiny_backbone):
    write_idx(str(tmp_path / "idx"), {"train": 30, "t10k": 12})
    manifest = _extract(f"idx:{tmp_path / 'idx'}", str(tmp_path / "out"), tiny_backbone,
                        "--limit=train=20,test=5")
    assert manifest["inputs"] == 25
    assert sum(manifest["counts"]["test"].values()) == 5


@pytest.mark.slow
def test_manifest_lines_naming_one_file_twice_are_read_once(tmp_path, tiny_backbone):
    """The job reads a source twice (plan, then extract): a file listed twice must still be
    one record and one `duplicate` letter, and a file listed with two labels two conflicts."""
    from tests.helpers.images import write_manifest

    write_folder(str(tmp_path / "images"), per_class=3)
    rows = [(f"images/{label}/{i:04d}.png", label) for label in ("cat", "dog") for i in range(3)]
    rows += [("images/cat/0000.png", "cat"),                 # the same line again
             ("images/dog/0001.png", "cat")]                 # the same file, another label
    manifest_path = write_manifest(str(tmp_path / "list.csv"), rows, header=True)
    manifest = _extract(f"manifest:{manifest_path}", str(tmp_path / "out"), tiny_backbone)
    assert manifest["inputs"] == 8 == manifest["accepted"] + manifest["rejected"]
    assert manifest["dead_letters"] == {"duplicate": 1, "conflicting_labels": 2}
    [run] = runs.committed_runs(str(tmp_path / "out"))
    uris = [r[record.URI] for split in ("train", "validation", "test") for r in _rows(run, split)]
    assert len(uris) == len(set(uris)) == 5
