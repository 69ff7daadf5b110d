"""tv-train --exclude: which entries each kind of file names, and training without them."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest

from beam_jobs.cli.errors import UserError
from beam_jobs.cli.launch import main
from tests.helpers import fake_runs as fx
from trainer.train import command as train_module
from trainer.train.data.exclude import read_exclusions


def _write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_label_issues_csv_excludes_only_flagged_rows(tmp_path):
    path = _write(tmp_path / "label_issues.csv",
                  "uri,image_id,split,given_label,suggested_label,score,flagged\n"
                  "u1,id1,train,cat,dog,0.01,true\nu2,id2,test,dog,dog,0.9,false\n")
    assert read_exclusions(path) == {"id1"}


def test_near_duplicates_csv_excludes_every_pairs_copy(tmp_path):
    path = _write(tmp_path / "near_duplicates.csv",
                  "uri_a,uri_b,similarity,split_a,split_b,label_a,label_b,cross_split,"
                  "label_mismatch\nkeep1,copy1,0.99,test,train,a,a,true,false\n"
                  "keep2,copy2,0.97,train,train,a,b,false,true\n")
    assert read_exclusions(path) == {"copy1", "copy2"}


def test_plain_list_with_comments_and_blank_lines(tmp_path):
    path = _write(tmp_path / "drop.txt", "# bad ones\nidx:train#3\n\n  abc123  \n")
    assert read_exclusions(path) == {"idx:train#3", "abc123"}


def test_missing_exclude_file_exits_2(tmp_path, capsys):
    fx.write_run(str(tmp_path), "20240101T000000-a")
    code = main(train_module.run, ["--data", str(tmp_path), "--model_dir",
                                   str(tmp_path / "model"), "--exclude", str(tmp_path / "no")])
    assert code == 2 and "does not exist" in capsys.readouterr().err


def _uris(run_dir: str, split: str) -> list[tuple[str, str, str]]:
    table = pq.read_table(os.path.join(run_dir, "parquet"), columns=["uri", "image_id", "label"],
                          filters=[("split", "=", split)])
    return list(zip(*(table.column(c).to_pylist() for c in ("uri", "image_id", "label"))))


def test_training_leaves_out_exactly_the_listed_images_and_says_how_many(tmp_path):
    run_dir = fx.write_run(str(tmp_path), "20240101T000000-a", seed=1,
                           per_class={"train": 20, "validation": 5, "test": 6})
    train_rows, test_rows = _uris(run_dir, "train"), _uris(run_dir, "test")
    listed = [train_rows[0][0], train_rows[1][1], test_rows[0][0], "not-in-any-run"]
    exclude = _write(tmp_path / "drop.txt", "\n".join(listed) + "\n")
    metrics = train_module.train(
        train_module.TrainConfig(epochs=3, batch_size=16, seed=1), str(tmp_path),
        str(tmp_path / "model"), export=False, exclude=exclude)

    assert metrics["excluded"] == {"images": 3, "train": 2, "validation": 0, "test": 1}
    expected_train = {label: 20 for label in fx.CLASSES}
    for _, _, label in train_rows[:2]:
        expected_train[label] -= 1
    assert metrics["counts"]["train"] == expected_train
    assert sum(map(sum, metrics["confusion_matrix"])) == 3 * 6 - 1  # test rows really skipped
    with open(tmp_path / "model" / "metrics.json") as f:
        assert json.load(f)["excluded"]["images"] == 3
    report = (tmp_path / "model" / "report.html").read_text()
    assert "excluded (--exclude)" in report and "train 2" in report


def test_parquet_format_cannot_skip_and_says_so(tmp_path):
    fx.write_run(str(tmp_path), "20240101T000000-a")
    exclude = _write(tmp_path / "drop.txt", "fake://20240101T000000-a/train/cat/0.png\n")
    config = train_module.TrainConfig(epochs=1, input_format="parquet")
    with pytest.raises(UserError, match="--exclude"):
        train_module.train(config, str(tmp_path), str(tmp_path / "model"), export=False,
                           exclude=exclude)
