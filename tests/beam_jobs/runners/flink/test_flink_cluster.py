"""The extract and batch-prediction jobs on a real Flink session cluster (JobManager, two
TaskManagers in their own JVMs, Beam's job server, SDK workers from Beam's worker pool) give
the same answer as the DirectRunner, and Flink's REST API shows Flink did the work."""

from __future__ import annotations

import json
import os
import time

import pyarrow.parquet as pq
import pytest

from beam_jobs.extract import pipeline as extract
from beam_jobs.runners.flink import rest
from beam_jobs.runs import read as runs
from tests.beam_jobs.runners.flink.conftest import FLINK_CONFIG
from tests.helpers import images
from tests.helpers.same_run import assert_same_run


def write_images_with_bad_files(root: str, per_class: int) -> str:
    """`per_class` PNGs in each of three class folders, plus three files no decoder takes."""
    images.write_folder(root, per_class=per_class)
    bad = {("dog", "broken.png"): b"not an image",
           ("cat", "cut.jpg"): images.truncated(images.plain_jpeg(), 0.3),
           ("owl", "noise.png"): images.random_bytes(512)}
    for (label, name), data in bad.items():
        with open(os.path.join(root, label, name), "wb") as f:
            f.write(data)
    return root


# Each test submits a Flink job (a minute or so here): part of `make test`, skipped by
# `make test-fast`.
pytestmark = pytest.mark.slow


def flink_jobs_since(port: int, started_ms: float) -> list[dict]:
    return [job for job in rest.jobs(port) if job["start-time"] >= started_ms]


def assert_flink_ran_it(port: int, started_ms: float) -> list[dict]:
    """Every job submitted since `started_ms` FINISHED, with subtasks on both TaskManagers."""
    jobs = flink_jobs_since(port, started_ms)
    assert jobs, "no job reached the Flink cluster"
    for job in jobs:
        assert job["state"] == "FINISHED", job
        assert len(rest.taskmanagers_of_job(port, job["jid"])) == 2, job["jid"]
    return jobs


def test_extract_on_flink_is_the_direct_runners_run(flink_cluster, tiny_backbone, tmp_path):
    folders, spec = flink_cluster
    source = write_images_with_bad_files(str(tmp_path / "images"), per_class=100)
    common = [f"--source=folder:{source}", f"--backbone={tiny_backbone}", "--num_shards=2",
              "--no_progress"]
    extract.run([*common, f"--output={tmp_path / 'direct'}"])
    started_ms = time.time() * 1000
    extract.run([f"--config={FLINK_CONFIG}", *common, f"--output={tmp_path / 'flink'}"])

    [job] = assert_flink_ran_it(spec.rest_port, started_ms)
    spread = rest.records_by_taskmanager(spec.rest_port, job["jid"], "DecodeImages")
    assert len(spread) == 2 and min(spread.values()) > 0, spread  # --redistribute at work
    [flink] = runs.committed_runs(str(tmp_path / "flink"))
    [direct] = runs.committed_runs(str(tmp_path / "direct"))
    figures = assert_same_run(flink, direct)
    assert figures["inputs"] == 303 and figures["dead_letters"] == 3
    print(f"flink job {job['jid']} {job['duration'] / 1000:.1f} s, decode stage records per "
          f"TaskManager {spread}; same run: {figures}")


def _predictions(output) -> dict[str, tuple]:
    rows = [row for path in sorted(output.glob("predictions-*.parquet"))
            for row in pq.read_table(path).to_pylist()]
    return {row["uri"]: (row["top_k_labels"], row["top_k_probabilities"]) for row in rows}


def test_batch_prediction_on_flink_predicts_what_the_direct_runner_does(flink_cluster, exported,
                                                                        tmp_path):
    from trainer.serve import predict

    folders, spec = flink_cluster
    _, _, model_dir = exported
    source = write_images_with_bad_files(str(tmp_path / "images"), per_class=10)
    common = [f"--model={model_dir}", f"--source=folder:{source}", "--top_k=2", "--no_progress"]
    direct = predict.run([*common, f"--output={tmp_path / 'direct'}"])
    started_ms = time.time() * 1000
    on_flink = predict.run([f"--config={FLINK_CONFIG}", *common, f"--output={tmp_path / 'flink'}"])

    assert_flink_ran_it(spec.rest_port, started_ms)
    assert (on_flink["inputs"], on_flink["predicted"], on_flink["rejected"]) == (33, 30, 3)
    assert {k: on_flink[k] for k in ("inputs", "predicted", "rejected", "labels")} == {
        k: direct[k] for k in ("inputs", "predicted", "rejected", "labels")}
    a, b = _predictions(tmp_path / "flink"), _predictions(tmp_path / "direct")
    assert sorted(a) == sorted(b)
    for uri, (labels, probabilities) in a.items():
        assert labels == b[uri][0]
        assert max(abs(x - y) for x, y in zip(probabilities, b[uri][1])) < 1e-5
    letters = [json.loads(line) for path in (tmp_path / "flink" / "dead_letters").iterdir()
               for line in path.read_text().splitlines()]
    assert sorted(os.path.basename(d["uri"]) for d in letters) == [
        "broken.png", "cut.jpg", "noise.png"]
