"""Faults: a SIGKILLed extract publishes nothing, a rerun counts exactly; every bad input of
every kind is accounted for end to end (inputs = accepted + rejected)."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from typing import Optional

import pytest
import tensorflow as tf

from beam_jobs.cli.errors import UserError
from beam_jobs.extract import pipeline as extract
from beam_jobs.runs import extract_jobs as jobs
from beam_jobs.runs import read as runs
from tests.helpers import REPO_ROOT
from tests.helpers import images as md
from tests.helpers.images import write_folder, write_manifest
from trainer.train.data.dataset import open_training_data

_BAD = {"empty.png": b"", "notes.png": b"not an image\n", "cut.jpg": md.truncated(md.plain_jpeg()),
        "huge.png": md.huge_declared_png()}


def _images(root: str) -> str:
    """24 good images (3 classes) + 4 bad ones: 28 inputs, 24 accepted, 4 dead letters."""
    write_folder(root, per_class=8)
    for name, data in _BAD.items():
        with open(os.path.join(root, "cat", name), "wb") as f:
            f.write(data)
    return root


def _start(source: str, out: str, backbone: str, run_id: str, log) -> subprocess.Popen:
    args = [sys.executable, "-m", "beam_jobs.extract", f"--source={source}", f"--output={out}",
            f"--backbone={backbone}", "--num_shards=2", "--splits=50,25,25",
            f"--run_id={run_id}", "--direct_running_mode=in_memory", "--no_progress"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                            cwd=REPO_ROOT)


def _kill_at_random_points(procs: dict, out: str, rng: random.Random) -> dict:
    """One attempt dies at a random time; the other at a random moment after its run folder
    first holds files (while the sinks write or the commit runs)."""
    started, plan, killed = time.time(), {}, {}
    plan["timed"] = rng.uniform(3.0, 30.0)  # may also land after it committed: then it counts
    while len(killed) < len(procs):
        now = time.time() - started
        for run_id, proc in procs.items():
            if run_id in killed:
                continue
            run_dir = os.path.join(out, "runs", run_id)
            if run_id not in plan and os.path.isdir(run_dir) and os.listdir(run_dir):
                plan[run_id] = now + rng.uniform(0.0, 3.0)
            if proc.poll() is not None or now >= plan.get(run_id, float("inf")):
                alive = proc.poll() is None
                if alive:
                    os.kill(proc.pid, signal.SIGKILL)  # our own child, by its id
                proc.wait()
                killed[run_id] = {"at_s": round(now, 2), "killed": alive,
                                  "files": sorted(os.listdir(run_dir)) if os.path.isdir(
                                      run_dir) else []}
        if now > 300:  # a very loaded machine is slow, not broken; a hung one is
            pytest.fail("extract attempts did not end")
        time.sleep(0.05)
    return killed


def _rows(run: runs.Run) -> int:
    return sum(1 for split in ("train", "validation", "test") for shard in run.shards(split)
               for _ in tf.data.TFRecordDataset(shard, compression_type="GZIP"))


@pytest.mark.slow
def test_sigkill_leaves_no_visible_run_and_the_rerun_counts_exactly(tmp_path, tiny_backbone):
    seed = int(os.environ.get("TV_FAULT_SEED", time.time()))
    rng = random.Random(seed)
    root, out = _images(str(tmp_path / "images")), str(tmp_path / "out")
    started = time.time()
    with open(tmp_path / "attempts.log", "wb") as log:
        procs = {"timed": _start(f"folder:{root}", out, tiny_backbone, "timed", log),
                 "writing": _start(f"folder:{root}", out, tiny_backbone, "writing", log)}
        outcomes = _kill_at_random_points(procs, out, rng)
    print(f"seed={seed} outcomes={json.dumps(outcomes)}")
    # A kill that lands after `_SUCCESS` (while the process finishes up) leaves a committed run:
    # the commit point had passed.  Any other kill must leave nothing a reader takes as a run.
    survivors = {run_id for run_id, o in outcomes.items() if runs.SUCCESS in o["files"]}
    assert all(runs.SUCCESS in o["files"] for o in outcomes.values() if not o["killed"])
    committed = {run.run_id for run in runs.committed_runs(out)}
    assert committed == survivors  # a run killed before its commit point is never visible
    for run_id in set(outcomes) - survivors:
        if os.path.isdir(os.path.join(out, "runs", run_id)):
            with pytest.raises(UserError):  # "not a committed run" or "no committed run"
                open_training_data(os.path.join(out, "runs", run_id))

    manifest = extract.run([f"--source=folder:{root}", f"--output={out}",
                            f"--backbone={tiny_backbone}", "--num_shards=2", "--splits=50,25,25",
                            "--run_id=rerun", "--no_progress"])
    print(f"kill phase + rerun took {time.time() - started:.1f} s")
    assert (manifest["inputs"], manifest["accepted"], manifest["rejected"]) == (28, 24, 4)
    assert manifest["dead_letters"] == {"empty": 1, "not_an_image": 1, "truncated": 1,
                                        "too_large": 1}
    [rerun] = [run for run in runs.committed_runs(out) if run.run_id == "rerun"]
    assert _rows(rerun) == 24 == sum(rerun.count(s) for s in ("train", "validation", "test"))
    data = open_training_data(out)
    assert {run.run_id for run in data.runs} == survivors | {"rerun"}


@pytest.mark.slow
def test_every_kind_of_bad_input_in_a_manifest_is_accounted_and_policy_recorded(tmp_path, tiny_backbone):
    images = tmp_path / "images"
    rows = []
    for index, (name, (make, _)) in enumerate(_matrix().items()):
        images.mkdir(exist_ok=True)
        (images / name).write_bytes(make())
        rows.append((f"images/{name}", ("cat", "dog")[index % 2]))
    rows += [("images/missing.png", "cat"), ("images/cmyk_jpeg", "dog")]  # gone; a duplicate
    manifest_path = write_manifest(str(tmp_path / "list.csv"), rows, header=True)
    with open(manifest_path, "a") as f:
        f.write("only-one-field\n")
    manifest = extract.run([f"--source=manifest:{manifest_path}", f"--output={tmp_path / 'out'}",
                            f"--backbone={tiny_backbone}", "--num_shards=1", "--no_progress",
                            "--resize_policy=pad"])
    expected_bad = [e for _, e in _matrix().values() if isinstance(e, str)]
    reasons = {}
    for reason in expected_bad + ["unreadable", "unreadable"]:
        reasons[reason] = reasons.get(reason, 0) + 1
    reasons["conflicting_labels"] = 2  # cmyk_jpeg listed under cat and dog: both copies go
    good = len(_matrix()) - len(expected_bad) - 1
    assert manifest["inputs"] == len(rows) + 1 == manifest["accepted"] + manifest["rejected"]
    assert manifest["dead_letters"] == reasons and manifest["accepted"] == good
    assert manifest["options"]["resize"]["policy"] == "pad"  # what serving must do too


def _matrix():
    from tests.beam_jobs.images.test_decode import MATRIX

    return MATRIX


_LINE = re.compile(r"^(Planning job (?P<job>\S+)|Extracting chunk (?P<chunk>\d+)/\d+ of job "
                   r"\S+|Committed run (?P<run>\S+))")


def _in_flight(log: str) -> Optional[int]:
    """The chunk an attempt was extracting when it died (its log's last start not followed by
    that chunk's commit), or None if it died between chunks."""
    current = None
    for line in log.splitlines():
        found = _LINE.match(line)
        if not found:
            continue
        if found.group("job"):
            current = 0
        elif found.group("chunk"):
            current = int(found.group("chunk")) - 1
        else:
            current = None
    return current


def _held_uris(out: str) -> list[str]:
    import pyarrow.parquet as pq

    held = []
    for run in runs.committed_runs(out):
        for split in ("train", "validation", "test"):
            for shard in run.shards(split, "parquet"):
                held += pq.read_table(shard, columns=["uri"])["uri"].to_pylist()
        letters = os.path.join(run.path, runs.DEAD_LETTERS_DIR)
        for name in sorted(os.listdir(letters)) if os.path.isdir(letters) else []:
            with open(os.path.join(letters, name)) as f:
                held += [json.loads(line)["uri"] for line in f if line.strip()]
    return held


@pytest.mark.slow
def test_sigkill_at_random_points_of_a_chunked_job_then_rerun_holds_each_input_once(
        tmp_path, tiny_backbone):
    seed = int(os.environ.get("TV_FAULT_SEED", time.time()))
    rng = random.Random(seed)
    root, out = str(tmp_path / "images"), str(tmp_path / "out")
    write_folder(root, per_class=16)  # 48 good images
    for name, data in _BAD.items():  # + 4 bad: 52 inputs
        with open(os.path.join(root, "cat", name), "wb") as f:
            f.write(data)
    inputs = sorted(os.path.join(d, n) for d, _, names in os.walk(root) for n in names)
    args = [sys.executable, "-m", "beam_jobs.extract", f"--source=folder:{root}",
            f"--output={out}", f"--backbone={tiny_backbone}", "--num_shards=1",
            "--commit_every=13", "--direct_running_mode=in_memory", "--no_progress"]  # 4 chunks
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    cwd = REPO_ROOT
    kills, in_flight, attempts = 0, [], 0
    while True:
        attempts += 1
        log_path = tmp_path / f"attempt{attempts}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
            deadline = time.time() + (rng.uniform(4.0, 30.0) if kills < 2 else 600)
            while proc.poll() is None and time.time() < deadline:
                time.sleep(0.05)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)  # our own child, by its id
                proc.wait()
                kills += 1
                in_flight.append(_in_flight(log_path.read_text(errors="replace")))
                continue
        assert proc.returncode == 0, log_path.read_text(errors="replace")[-3000:]
        break  # the job completed (a timed kill may land after the end: then it counts)
    [job] = jobs.planned_jobs(out)
    sizes = [sum(job.record["planned"].get(str(c), {}).values()) for c in range(job.chunks)]
    redone = sum(sizes[c] for c in in_flight if c is not None)
    print(f"seed={seed} chunks={job.chunks} sizes={sizes} kills={kills} in_flight={in_flight} "
          f"images extracted twice={redone} per kill={redone / max(kills, 1):.1f}")
    assert sorted(_held_uris(out)) == inputs  # every input exactly once, record or dead letter
    manifests = [run.manifest for run in runs.committed_runs(out)]
    assert [m["run_id"] for m in manifests] == job.run_ids()
    assert sum(m["inputs"] for m in manifests) == 52 == sum(
        m["accepted"] + m["rejected"] for m in manifests)
    again = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, check=True)
    assert "Nothing to extract" in again.stdout  # the same command after completion
    assert [run.run_id for run in runs.committed_runs(out)] == job.run_ids()
