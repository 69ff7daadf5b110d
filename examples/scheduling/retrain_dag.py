"""Airflow DAG: the delta extraction on Dataflow through Beam's operator, then tv-retrain.

Needs `apache-airflow-providers-apache-beam` (and `-google` for Dataflow) on the Airflow
workers and `transfer-values` installed where the BashOperator runs.  The extraction is the
heavy, parallel part, so it goes to a Beam runner; tv-retrain then finds the delta already
committed (its own `--incremental` pass extracts nothing new) and trains, compares and
promotes under its lock.
"""

from __future__ import annotations

import datetime

from airflow import DAG
from airflow.operators.bash import BashOperator
from airflow.operators.python import PythonOperator
from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator

SOURCE = "folder:gs://example-bucket/images"
WORKDIR = "/srv/transfer-values"  # models, `current`, history.jsonl: local to the Airflow worker
RUNS_ROOT = "gs://example-bucket/transfer_values"  # the runs: where Dataflow can write
BACKBONE = "efficientnet_lite0"


def extract_output() -> str:
    """The folder tv-retrain reads runs from (one per backbone fingerprint)."""
    from beam_jobs import backbones
    from trainer.retrain.command import data_dir

    return data_dir(RUNS_ROOT, backbones.load(BACKBONE))


with DAG(dag_id="tv_retrain", schedule="17 3 * * *", catchup=False, max_active_runs=1,
         start_date=datetime.datetime(2026, 1, 1), tags=["transfer-values"]) as dag:
    output = PythonOperator(task_id="extract_output", python_callable=extract_output)
    extract_delta = BeamRunPythonPipelineOperator(
        task_id="extract_delta",
        runner="DataflowRunner",
        py_file="beam_jobs/extract/__main__.py",  # tv-extract, from the package source tree
        pipeline_options={
            "source": SOURCE,
            "output": "{{ ti.xcom_pull(task_ids='extract_output') }}",
            "backbone": BACKBONE,
            "incremental": True,
            "setup_file": "./setup.py",
            "temp_location": "gs://example-bucket/tmp",
        },
        dataflow_config={"job_name": "tv-extract-delta", "project_id": "example-project",
                         "location": "europe-west1"},
    )
    retrain = BashOperator(
        task_id="retrain",
        bash_command=(f"tv-retrain --source={SOURCE} --workdir={WORKDIR} "
                      f"--runs_root={RUNS_ROOT} --margin=0.01"),
        # 75: another retrain holds the lock; skip rather than fail.
        skip_on_exit_code=75,
    )
    output >> extract_delta >> retrain
