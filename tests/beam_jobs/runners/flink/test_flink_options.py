"""examples/flink.yaml is taken the same way by every command that runs a Beam job (no cluster
needed): tv-extract, tv-predict --source and the extraction inside tv-retrain."""

from __future__ import annotations

import yaml

from beam_jobs.cli import flags
from beam_jobs.extract.options import ExtractOptions
from beam_jobs.runners.flink.config import ClusterSpec
from tests.beam_jobs.runners.flink.conftest import FLINK_CONFIG

FLINK_FLAGS = {"--runner=FlinkRunner", "--job_endpoint=localhost:8099",
               "--environment_type=EXTERNAL", "--environment_config=localhost:50000"}


def test_example_config_names_the_ports_the_cluster_listens_on():
    with open(FLINK_CONFIG) as f:
        options = yaml.safe_load(f)
    spec = ClusterSpec()
    assert options["flink_master"] == f"localhost:{spec.rest_port}"
    assert options["job_endpoint"] == f"localhost:{spec.job_port}"
    assert options["environment_config"] == f"localhost:{spec.worker_pool_port}"
    assert options["parallelism"] == spec.taskmanagers * spec.slots_per_taskmanager


def test_tv_extract_accepts_every_option_of_the_example(tmp_path):
    options = flags.parse_pipeline_options(
        [f"--config={FLINK_CONFIG}", f"--source=folder:{tmp_path}", f"--output={tmp_path}/o"],
        ExtractOptions, prog="tv-extract", description="", example="")
    every = options.get_all_options()
    assert every["runner"] == "FlinkRunner" and every["environment_type"] == "EXTERNAL"
    assert every["experiments"] == ["pre_optimize=all"]


def test_tv_predict_batch_job_accepts_the_example(tmp_path):
    from beam_jobs.predict.pipeline import parse_options

    (tmp_path / "images").mkdir()
    options = parse_options([f"--config={FLINK_CONFIG}", "--model=m",
                             f"--source=folder:{tmp_path / 'images'}",
                             f"--output={tmp_path / 'p'}"])
    assert options.get_all_options()["job_endpoint"] == "localhost:8099"


def test_tv_retrain_hands_the_example_to_its_extraction(tmp_path):
    from trainer.retrain.command import parse_args

    config = parse_args([f"--config={FLINK_CONFIG}", f"--source=folder:{tmp_path}",
                         f"--workdir={tmp_path / 'w'}"])
    assert FLINK_FLAGS <= set(config.extract_args)
