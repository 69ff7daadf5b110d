"""A TaskManager killed with -9 in the middle of a chunked extract on Flink: Flink restarts the
chunk's job once `make flink-up` has replaced the TaskManager (or the command fails and the same
command resumes), and in the end every input is in exactly one committed run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from beam_jobs.runners.flink import cluster, rest
from beam_jobs.runs import read as runs
from tests.beam_jobs.runners.flink.conftest import FLINK_CONFIG, LONG
from tests.beam_jobs.runners.flink.test_flink_cluster import write_images_with_bad_files
from tests.helpers import REPO_ROOT
from tests.helpers.same_run import dead_letters, rows

pytestmark = [pytest.mark.slow, LONG]


def _extract_command(source: str, output: str, backbone: str) -> list[str]:
    return [sys.executable, "-m", "beam_jobs.extract", f"--config={FLINK_CONFIG}",
            f"--source=folder:{source}", f"--output={output}", f"--backbone={backbone}",
            "--num_shards=1", "--commit_every=40", "--no_progress"]


def _wait_for(condition, seconds: float, what: str) -> float:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return time.time()


def _running_job(port: int, after_ms: float) -> dict | None:
    running = [job for job in rest.jobs(port)
               if job["state"] == "RUNNING" and job["start-time"] > after_ms]
    return running[0] if running else None


def test_killed_taskmanager_loses_no_input_and_commits_each_once(flink_cluster, tiny_backbone,
                                                                 tmp_path):
    folders, spec = flink_cluster
    source = write_images_with_bad_files(str(tmp_path / "images"), per_class=40)
    output = str(tmp_path / "out")
    command = _extract_command(source, output, tiny_backbone)
    started = time.time()
    job = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    # Wait for the first committed chunk, then for the next chunk's Flink job to run.
    _wait_for(lambda: len(runs.committed_runs(output)) >= 1, 600, "the first chunk")
    committed_ms = time.time() * 1000
    _wait_for(lambda: _running_job(spec.rest_port, committed_ms) is not None, 300,
              "the second chunk's job")
    victim = _running_job(spec.rest_port, committed_ms)
    time.sleep(5)  # let its tasks reach both TaskManagers
    [doomed, *_] = cluster.running_pids(folders, "taskmanager")
    os.kill(doomed, signal.SIGKILL)
    killed = time.time()
    cluster.up(folders, spec)  # what a supervisor (or the user) does: replace the TaskManager
    replaced = time.time()
    out, _ = job.communicate(timeout=1200)
    finished = time.time()
    resumed = 0.0
    if job.returncode != 0:  # the job gave up: the same command resumes the chunked job
        rerun = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                               timeout=1200)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        resumed = time.time() - finished

    committed = runs.committed_runs(output)
    ids = [key for run in committed for key in rows(run)]
    assert len(ids) == len(set(ids)) == 120  # every good image exactly once
    assert sum(len(dead_letters(run)) for run in committed) == 3
    assert sum(run.manifest["inputs"] for run in committed) == 123
    run_folders = os.listdir(os.path.join(output, "runs"))
    assert sorted(run_folders) == sorted(run.run_id for run in committed)  # none half-visible
    restarts = rest.get(spec.rest_port, f"/jobs/{victim['jid']}")
    print(f"lost worker: job {victim['jid']} state {restarts['state']}, "
          f"exceptions {rest.job_exceptions(spec.rest_port, victim['jid'])[:2]}, "
          f"TaskManager replaced {replaced - killed:.1f} s after the kill, "
          f"extract finished {finished - killed:.1f} s after it (exit {job.returncode}), "
          f"resume {resumed:.1f} s, whole extract {finished + resumed - started:.1f} s, "
          f"{len(committed)} runs")
    if job.returncode == 0:
        assert "Committed run" in out
