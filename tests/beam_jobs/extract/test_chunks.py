"""Chunked jobs: every input in exactly one committed run, a failed chunk resumed by the same
command, the same command after completion a no-op, and training on the union of chunks."""

import json
import os

import pyarrow.parquet as pq
import pytest

from beam_jobs.cli.launch import main
from beam_jobs.extract import driver
from beam_jobs.extract import pipeline as extract
from beam_jobs.extract.plan import chunks
from beam_jobs.runs import extract_jobs as jobs
from beam_jobs.runs import read as runs
from schemas import record
from tests.helpers import images as md
from tests.helpers.images import write_folder

_BAD = {"empty.png": b"", "notes.png": b"not an image\n", "cut.jpg": md.truncated(md.plain_jpeg())}


def _images(root: str) -> tuple[str, set[str]]:
    """30 good images (3 classes), 3 bad, 1 duplicate: 34 inputs."""
    write_folder(root, per_class=10)
    for name, data in _BAD.items():
        with open(os.path.join(root, "cat", name), "wb") as f:
            f.write(data)
    with open(os.path.join(root, "dog", "0000.png"), "rb") as f:
        copy = f.read()
    with open(os.path.join(root, "dog", "again.png"), "wb") as f:
        f.write(copy)
    uris = {os.path.join(d, n) for d, _, names in os.walk(root) for n in names}
    return root, uris


def _argv(root: str, out: str, backbone: str, *extra: str) -> list[str]:
    return [f"--source=folder:{root}", f"--output={out}", f"--backbone={backbone}",
            "--num_shards=1", "--splits=60,20,20", "--commit_every=8", "--no_progress", *extra]


def _outcomes(out: str) -> list[str]:
    """Every uri any committed run holds, as a record or as a dead letter, once per holding."""
    held = []
    for run in runs.committed_runs(out):
        for split in record.SPLITS:
            for shard in run.shards(split, "parquet"):
                held += pq.read_table(shard, columns=[record.URI])[record.URI].to_pylist()
        letters = os.path.join(run.path, runs.DEAD_LETTERS_DIR)
        for name in os.listdir(letters) if os.path.isdir(letters) else []:
            with open(os.path.join(letters, name)) as f:
                held += [json.loads(line)["uri"] for line in f if line.strip()]
    return held


@pytest.mark.slow
def test_failed_chunk_is_resumed_by_the_same_command_and_each_input_lands_once(
        tmp_path, tiny_backbone, monkeypatch, capsys):
    root, uris = _images(str(tmp_path / "images"))
    out = str(tmp_path / "out")
    commits, graphs = [], []
    real_commit, real_graph = driver._commit_chunk, driver._run_graph

    def crash_on_third(opts, backbone, job, chunk, stats, elapsed):
        if len(commits) == 2:
            raise RuntimeError("simulated crash before the third commit")
        commits.append(chunk)
        return real_commit(opts, backbone, job, chunk, stats, elapsed)

    monkeypatch.setattr(driver, "_commit_chunk", crash_on_third)
    with pytest.raises(RuntimeError):
        extract.run(_argv(root, out, tiny_backbone))
    [job] = jobs.planned_jobs(out)
    assert job.chunks == 4 and sum(job.committed(out)) == 2  # 30 planned images / 8
    monkeypatch.setattr(driver, "_commit_chunk", real_commit)
    monkeypatch.setattr(driver, "_run_graph", lambda *a: graphs.append(a[2]) or real_graph(*a))
    summary = extract.run(_argv(root, out, tiny_backbone))
    assert "Resuming job" in capsys.readouterr().out
    assert graphs == [jobs.chunk_run_id(job.job_id, c) for c in (2, 3)]  # only what was left
    assert sorted(_outcomes(out)) == sorted(uris)  # each input exactly once over the runs
    assert summary["inputs"] == 34 == summary["accepted"] + summary["rejected"]
    assert summary["accepted"] == 30 and summary["dead_letters"] == {
        "empty": 1, "not_an_image": 1, "truncated": 1, "duplicate": 1}
    committed = runs.committed_runs(out)
    assert [r.run_id for r in committed] == job.run_ids()
    assert {tuple(r.labels) for r in committed} == {("cat", "dog", "owl")}  # one label_id map
    assert [r.manifest["job"]["chunk"] for r in committed] == [0, 1, 2, 3]

    assert main(extract.run, _argv(root, out, tiny_backbone)) == 0  # the same command again
    assert "Nothing to extract" in capsys.readouterr().out
    assert [r.run_id for r in runs.committed_runs(out)] == job.run_ids()


def test_a_chunk_reads_only_its_own_files(tmp_path):
    uris = [f"/data/cat/{i}.png" for i in range(1000)]
    per_chunk = [[u for u in uris if chunks.InChunk(4, c)(u)] for c in range(4)]
    assert sorted(sum(per_chunk, [])) == sorted(uris)  # a partition: each uri in one chunk
    assert all(200 < len(part) < 300 for part in per_chunk)
    assert chunks.chunk_count(20_001, 20_000) == 2 and chunks.chunk_count(0, 20_000) == 1


@pytest.mark.slow
def test_training_on_a_chunked_output_sees_every_image_once(tmp_path, tiny_backbone):
    from trainer.train.command import train
    from trainer.train.config import TrainConfig
    from trainer.train.data.dataset import evaluation_dataset, open_training_data
    from trainer.train.data.transform import choose_transform_run

    root = write_folder(str(tmp_path / "images"), per_class=12)
    out = str(tmp_path / "out")
    summary = extract.run(_argv(root, out, tiny_backbone, "--commit_every=18"))  # 2 chunks
    assert summary["chunks"] == 2 and summary["accepted"] == 36
    data = open_training_data(out)
    assert not data.superseded.keys  # chunks hold disjoint images: nothing to supersede
    seen = [uri for split in record.SPLITS
            for _, _, batch in evaluation_dataset(data, split, TrainConfig(batch_size=8))
            for uri in batch.numpy()]
    assert len(seen) == len(set(seen)) == 36
    chosen = choose_transform_run(data.runs)
    assert chosen.count("train") == max(r.count("train") for r in data.runs)
    metrics = train(TrainConfig(epochs=2, batch_size=8, seed=1), out, str(tmp_path / "model"),
                    export=False)
    assert metrics["runs"] == [run.run_id for run in data.runs]
    assert sum(c["support"] for c in metrics["per_class"].values()) == sum(
        data.counts("test").values())  # every test image of every chunk evaluated once
    assert metrics["normalisation"].startswith(f"tensorflow-transform graph of run {chosen.path}")
