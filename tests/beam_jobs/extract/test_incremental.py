"""Incremental extraction: only new (or relabelled) images, delta runs recording their parents."""

import pytest
import os
import shutil

import pyarrow.parquet as pq

from beam_jobs.cli.launch import main
from beam_jobs.extract import pipeline as extract
from beam_jobs.runs import read as runs
from schemas import record
from tests.helpers.images import write_folder
from tests.helpers.tiny_backbone import make_tiny_backbone


def _extract(source: str, out: str, backbone: str, *extra: str) -> dict:
    return extract.run([f"--source={source}", f"--output={out}", f"--backbone={backbone}",
                        "--num_shards=1", "--splits=60,20,20", *extra])


def _ids(run: runs.Run) -> list[str]:
    """Every image_id in the run's Parquet shards, counted row by row."""
    return [image_id for split in record.SPLITS for shard in run.shards(split, "parquet")
            for image_id in pq.read_table(shard, columns=[record.IMAGE_ID])[record.IMAGE_ID]
            .to_pylist()]


@pytest.mark.slow
def test_adding_n_images_extracts_exactly_n_then_nothing_new_writes_no_run(
        tmp_path, tiny_backbone, capsys):
    root = write_folder(str(tmp_path / "images"), per_class=8)
    out = str(tmp_path / "out")
    first = _extract(f"folder:{root}", out, tiny_backbone, "--incremental")
    assert first["parent_runs"] == [] and first["accepted"] == 24
    shutil.copytree(write_folder(str(tmp_path / "more"), per_class=11), root, dirs_exist_ok=True)
    delta = _extract(f"folder:{root}", out, tiny_backbone, "--incremental")
    old, new = runs.committed_runs(out)
    assert delta["parent_runs"] == [old.run_id] and new.run_id == delta["run_id"]
    assert delta["accepted"] == 9 and delta["already_extracted"] == 24
    assert len(_ids(new)) == 9 and not set(_ids(new)) & set(_ids(old))
    capsys.readouterr()
    argv = [f"--source=folder:{root}", f"--output={out}", f"--backbone={tiny_backbone}",
            "--num_shards=1", "--splits=60,20,20", "--incremental"]
    assert main(extract.run, argv) == 0
    assert "Nothing new to extract" in capsys.readouterr().out
    assert sorted(os.listdir(os.path.join(out, runs.RUNS_DIR))) == [old.run_id, new.run_id]


@pytest.mark.slow
def test_backbone_change_means_full_extraction(tmp_path, tiny_backbone):
    root = write_folder(str(tmp_path / "images"), per_class=6)
    out = str(tmp_path / "out")
    _extract(f"folder:{root}", out, tiny_backbone)
    other = make_tiny_backbone(str(tmp_path / "other"), seed=1)
    manifest = _extract(f"folder:{root}", out, other, "--incremental")
    assert manifest["accepted"] == 18 and manifest["parent_runs"] == []
    assert manifest["already_extracted"] == 0


@pytest.mark.slow
def test_relabelled_image_is_extracted_again_and_its_newest_label_wins_once(
        tmp_path, tiny_backbone):
    from trainer.train.config import TrainConfig
    from trainer.train.data.dataset import evaluation_dataset, open_training_data

    root = write_folder(str(tmp_path / "images"), per_class=6)
    out = str(tmp_path / "out")
    _extract(f"folder:{root}", out, tiny_backbone)
    os.rename(os.path.join(root, "cat", "0003.png"), os.path.join(root, "dog", "moved.png"))
    manifest = _extract(f"folder:{root}", out, tiny_backbone, "--incremental")
    assert manifest["accepted"] == 1 and manifest["already_extracted"] == 17
    assert runs.committed_runs(out)[-1].labels == ["dog"]
    training_data = open_training_data(out)
    assert len(training_data.superseded.keys) == 1
    seen = {}
    for split in record.SPLITS:
        assert sum(training_data.counts(split).values()) == sum(
            1 for _ in evaluation_dataset(training_data, split, TrainConfig(batch_size=1)))
        for _, label_id, uri in evaluation_dataset(training_data, split, TrainConfig()):
            for i, u in zip(label_id.numpy(), uri.numpy()):
                seen[u.decode()] = training_data.labels[i]
    assert len(seen) == 18
    assert [label for uri, label in seen.items() if uri.endswith("moved.png")] == ["dog"]
    assert not [uri for uri in seen if uri.endswith(os.path.join("cat", "0003.png"))]


def test_known_images_are_read_from_view_0_rows_and_from_shards_without_views(tmp_path):
    import pyarrow as pa

    from beam_jobs.extract.plan import incremental

    ids, labels = ["a", "a", "a", "b", "b"], ["cat", "cat", "cat", "dog", "dog"]
    with_views = str(tmp_path / "views.parquet")
    pq.write_table(pa.table({record.IMAGE_ID: ids, record.LABEL: labels,
                             record.VIEW: [0, 1, -1, -1, 0]}), with_views)
    assert list(incremental.image_labels(with_views)) == [("a", "cat"), ("b", "dog")]
    before_views = str(tmp_path / "v1.parquet")  # schema version 1 wrote no view column
    pq.write_table(pa.table({record.IMAGE_ID: ["a", "b"], record.LABEL: ["cat", "dog"]}),
                   before_views)
    assert list(incremental.image_labels(before_views)) == [("a", "cat"), ("b", "dog")]
