"""The same extract pipeline on every runner, and on a filesystem that is not the local disk.

- DirectRunner in multi-process mode (workers are separate Python processes);
- PortableRunner with the embedded job service and SDK workers started by Beam's worker pool in
  separate processes (the Fn API path Flink, Spark and Dataflow share);
- Dataflow: the job graph built offline with --dry_run, and the --setup_file package built the
  way Dataflow stages it (it must hold beam_jobs, trainer and schemas);
- a non-local Beam FileSystem (`ram://`) end to end, commit included.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tarfile
import time

import pytest
import tensorflow as tf

import schemas
from beam_jobs.cli import flags
from beam_jobs.extract import pipeline as extract
from beam_jobs.extract.options import ExtractOptions
from beam_jobs.runs import read as runs
from tests.helpers import REPO_ROOT
from tests.helpers.images import class_image, png_bytes, write_idx

ROOT = REPO_ROOT


def _extract(tmp_path, backbone: str, *beam_flags: str, out: str | None = None) -> dict:
    write_idx(str(tmp_path / "idx"), {"train": 24, "t10k": 6})
    return extract.run([f"--source=idx:{tmp_path / 'idx'}", f"--output={out or tmp_path / 'out'}",
                        f"--backbone={backbone}", "--num_shards=2", *beam_flags])


def _assert_complete_run(manifest: dict, output: str) -> None:
    assert manifest["inputs"] == 30 == manifest["accepted"] + manifest["rejected"]
    [run] = runs.committed_runs(output)
    assert run.count("test") == 6 and run.count("train") + run.count("validation") == 24
    rows = [schemas.parse_tf_example(raw.numpy()) for split in ("train", "validation", "test")
            for raw in tf.data.TFRecordDataset(run.shards(split), compression_type="GZIP")]
    assert len(rows) == manifest["accepted"]


@pytest.mark.slow
def test_direct_runner_multi_process_commits_the_same_run(tmp_path, tiny_backbone):
    manifest = _extract(tmp_path, tiny_backbone, "--direct_running_mode=multi_processing",
                        "--direct_num_workers=2")
    _assert_complete_run(manifest, str(tmp_path / "out"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture
def worker_pool():
    """Beam's SDK worker pool (what a Flink task manager runs beside it): every SDK worker it
    starts is a fresh `python` process, so nothing of the driver's memory reaches the workers."""
    port = _free_port()
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    pool = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                             f"--service_port={port}"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("localhost", port)) == 0:
                break
        time.sleep(0.2)
    yield f"localhost:{port}"
    pool.terminate()
    pool.wait(timeout=30)


@pytest.mark.slow
def test_portable_runner_with_workers_in_separate_processes(tmp_path, tiny_backbone,
                                                             worker_pool):
    manifest = _extract(tmp_path, tiny_backbone, "--runner=PortableRunner",
                        "--job_endpoint=embed", "--environment_type=EXTERNAL",
                        f"--environment_config={worker_pool}")
    _assert_complete_run(manifest, str(tmp_path / "out"))


DATAFLOW_FLAGS = ["--runner=DataflowRunner", "--project=tv-offline-check",
                  "--region=europe-west1", "--temp_location=gs://tv-offline-check/tmp",
                  f"--setup_file={os.path.join(ROOT, 'setup.py')}", "--dry_run=True",
                  "--machine_type=n1-standard-4", "--max_num_workers=4"]


@pytest.mark.slow
def test_dataflow_job_graph_builds_offline(tmp_path, tiny_backbone):
    import apache_beam as beam

    from beam_jobs import backbones

    write_idx(str(tmp_path / "idx"), {"train": 6})
    options = flags.parse_pipeline_options(
        [f"--source=idx:{tmp_path / 'idx'}", "--output=gs://tv-offline-check/tv",
         f"--backbone={tiny_backbone}", *DATAFLOW_FLAGS],
        ExtractOptions, prog="tv-extract", description="", example="")
    opts = options.view_as(ExtractOptions)
    p = beam.Pipeline(options=options)
    extract.build_pipeline(p, opts, backbones.load(opts.backbone),
                           "gs://tv-offline-check/tv/runs/dry",
                           str(tmp_path / "tft"))  # TFT creates its temp folder while building
    result = p.run()  # --dry_run: translated and validated, never submitted
    transforms = {t.unique_name for t in result.job.proto_pipeline.components.transforms.values()}
    for stage in ("ReadImages", "DecodeImages", "RunInference", "WriteShards", "WriteStats"):
        assert stage in transforms
    assert result.job.options.view_as(beam.options.pipeline_options.SetupOptions).setup_file


def test_setup_file_package_holds_every_package_workers_import(tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.stager import Stager

    options = PipelineOptions([f"--setup_file={os.path.join(ROOT, 'setup.py')}"])
    Stager.create_job_resources(options, str(tmp_path))  # builds the sdist Dataflow stages
    [sdist] = [str(path) for path in tmp_path.rglob("*.tar.gz")]
    with tarfile.open(sdist) as archive:
        names = {"/".join(name.split("/")[1:]) for name in archive.getnames()}
    for module in ("beam_jobs/extract/pipeline.py", "beam_jobs/cli/launch.py",
                   "beam_jobs/sources/idx.py",
                   "beam_jobs/backbones/__init__.py", "schemas/record.py", "trainer/train/command.py"):
        assert module in names


@pytest.mark.slow
def test_extract_runs_end_to_end_on_a_non_local_filesystem(tiny_backbone):
    from apache_beam.io.filesystems import FileSystems

    from tests.helpers.ram_filesystem import RamFileSystem  # noqa: F401 - registers ram://

    root = "ram://bucket/images"
    for label_index, label in enumerate(("cat", "dog", "owl")):
        for i in range(5):
            image = class_image(label_index, i).repeat(3, axis=-1)
            with FileSystems.create(f"{root}/{label}/{i:03d}.png") as f:
                f.write(png_bytes(image))
    with FileSystems.create(f"{root}/dog/broken.png") as f:
        f.write(b"not an image")
    output = "ram://bucket/tv"
    manifest = extract.run([f"--source=folder:{root}", f"--output={output}",
                            f"--backbone={tiny_backbone}", "--num_shards=1"])
    assert manifest["inputs"] == 16 and manifest["dead_letters"] == {"not_an_image": 1}
    [run] = runs.committed_runs(output)
    assert run.path.startswith("ram://") and run.labels == ["cat", "dog", "owl"]
    assert tf.io.gfile.exists(f"{run.path}/{runs.SUCCESS}")
    assert tf.io.gfile.glob(f"{run.path}/parquet/*.parquet")
    rows = sum(1 for split in ("train", "validation", "test")
               for _ in tf.data.TFRecordDataset(run.shards(split), compression_type="GZIP"))
    assert rows == 15
