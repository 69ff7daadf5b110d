"""tv-runs: list every run and job with its state; gc removes only abandoned, old folders."""

import json
import os
import socket
import subprocess
import sys
import time

from beam_jobs.cli.launch import main
from beam_jobs.runs import command as runs_cli
from beam_jobs.runs import extract_jobs as jobs
from beam_jobs.runs import read as runs
from tests.helpers import fake_runs as fx

_DAY = 86400


def _age(path: str, seconds: float) -> None:
    """Make every file under `path` look `seconds` old."""
    then = time.time() - seconds
    for folder, _, names in os.walk(path):
        for name in names:
            os.utime(os.path.join(folder, name), (then, then))


def _beat(job_path: str, pid: int) -> None:
    os.makedirs(job_path, exist_ok=True)
    with open(os.path.join(job_path, jobs.HEARTBEAT), "w") as f:
        json.dump({"host": socket.gethostname(), "pid": pid, "time": time.time()}, f)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _output(tmp_path) -> str:
    """A committed run, a resumable two-chunk job (chunk 0 committed, chunk 1 half written by
    a killed driver), a job killed while planning, a job being written now, an old orphan."""
    out = str(tmp_path / "out")
    fx.write_run(out, "20260101T000000Z-aaaaaa")
    resumable = jobs.job_dir(out, "20260102T000000Z-bbbbbb")
    _beat(resumable, _dead_pid())
    jobs.write_job(resumable, {"job_id": "20260102T000000Z-bbbbbb", "chunks": 2})
    fx.write_run(out, "20260102T000000Z-bbbbbb")
    fx.write_run(out, "20260102T000000Z-bbbbbb-c0001", committed=False)
    _beat(jobs.job_dir(out, "20260103T000000Z-cccccc"), _dead_pid())  # killed while planning
    _beat(jobs.job_dir(out, "20260104T000000Z-dddddd"), os.getpid())  # alive: this process
    fx.write_run(out, "20260104T000000Z-dddddd", committed=False)
    fx.write_run(out, "20251231T000000Z-eeeeee", committed=False)  # no job: age decides
    _age(out, 2 * _DAY)
    return out


def test_list_shows_each_folder_with_its_state(tmp_path, capsys):
    out = _output(tmp_path)
    listed = runs_cli.run(["list", f"--output={out}"])
    table = capsys.readouterr().out
    entries = {e.name: e for e in listed if e.kind == "run"}
    assert {name: e.state for name, e in entries.items()} == {
        "20260101T000000Z-aaaaaa": "committed",
        "20260102T000000Z-bbbbbb": "committed",
        "20260102T000000Z-bbbbbb-c0001": "abandoned",
        "20260104T000000Z-dddddd": "in progress",
        "20251231T000000Z-eeeeee": "abandoned"}
    assert [e.state for e in listed if e.kind == "job"] == [
        "resumable", "abandoned", "in progress"]
    assert entries["20260101T000000Z-aaaaaa"].images == sum(fx.PER_CLASS.values()) * len(
        fx.CLASSES) and entries["20260101T000000Z-aaaaaa"].size_bytes > 0
    assert "1/2 chunks committed" in table and "fake" in table and "2.0d" in table


def test_gc_removes_only_abandoned_folders_older_than_asked(tmp_path, capsys):
    out = _output(tmp_path)
    assert main(runs_cli.run, ["gc", f"--output={out}", "--dry_run"]) == 0
    assert "would remove 3 abandoned folder(s)" in capsys.readouterr().out
    assert len(os.listdir(os.path.join(out, runs.RUNS_DIR))) == 5  # dry run: nothing gone
    assert main(runs_cli.run, ["gc", f"--output={out}", "--older_than=3d"]) == 0
    assert "removed 0" in capsys.readouterr().out  # two days old: younger than asked
    assert main(runs_cli.run, ["gc", f"--output={out}", "--older_than=1d"]) == 0
    assert sorted(os.listdir(os.path.join(out, runs.RUNS_DIR))) == [
        "20260101T000000Z-aaaaaa", "20260102T000000Z-bbbbbb", "20260104T000000Z-dddddd"]
    assert sorted(os.listdir(os.path.join(out, jobs.JOBS_DIR))) == [
        "20260102T000000Z-bbbbbb", "20260104T000000Z-dddddd"]  # the resumable plan stays
    assert [r.run_id for r in runs.committed_runs(out)] == [
        "20260101T000000Z-aaaaaa", "20260102T000000Z-bbbbbb"]


def test_bad_age_exits_2_with_one_sentence(tmp_path, capsys):
    os.makedirs(tmp_path / "out")
    assert main(runs_cli.run, ["gc", f"--output={tmp_path / 'out'}", "--older_than=soon"]) == 2
    assert "is not an age like" in capsys.readouterr().err


def test_list_shows_the_views_a_run_holds_besides_its_images(tmp_path, capsys):
    out = str(tmp_path / "out")
    fx.write_run(out, "20260101T000000Z-aaaaaa")
    fx.write_run(out, "20260102T000000Z-bbbbbb", augment_views=2, mirror=True)
    listed = {e.name: e for e in runs_cli.run(["list", f"--output={out}"])}
    plain, viewed = listed["20260101T000000Z-aaaaaa"], listed["20260102T000000Z-bbbbbb"]
    assert plain.views == 0 and viewed.images == plain.images
    images = fx.PER_CLASS
    assert viewed.views == len(fx.CLASSES) * (3 * images["train"] + images["validation"]
                                             + images["test"])
    table = capsys.readouterr().out.splitlines()
    assert "VIEWS" in table[0]
    assert f" {viewed.views} " in next(line for line in table if viewed.name in line)
