"""Extract jobs: what makes two commands the same job, where a job keeps its plan, and whether
it is still alive.

A job is one `tv-extract` command under one `--output`.  Its identity (`job_key`) is a hash of
the options that decide what is extracted, so rerunning the same command finds the same job:
an unfinished one resumes, a finished one extracts nothing.  Its folder `<out>/jobs/<job_id>/`
holds the plan (what each chunk holds) and `job.json`, written last: the plan's commit marker.
While the driver works it rewrites `_HEARTBEAT`; `tv-runs` and a second driver read it to tell a
running job from a killed one.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import socket
import threading
import time
from typing import Any, Optional

from apache_beam.io.filesystems import FileSystems

from beam_jobs.runs import read as runs
from schemas.run import HEARTBEAT, JOB_FILE, JOBS_DIR, PLAN_DIR  # noqa: F401

HEARTBEAT_EVERY_S = 20.0
HEARTBEAT_STALE_S = 120.0  # another host's job is taken for dead after this long silent
# Options that change what a job extracts; anything else (shards, batch size, runner) does not.
KEY_OPTIONS = ("source", "splits", "limit", "label_names", "tfrecord_image_key",
               "tfrecord_label_key", "resize_policy", "max_pixels", "commit_every",
               "incremental", "run_id", "augment_views")
# Options that change what a job extracts only when views are asked for: jobs without views
# keep the key they had before views existed, so the same command still finds its job.
VIEW_OPTIONS = ("augment_policy", "mirror_views")


def job_key(opts: Any, fingerprint: str) -> str:
    """The same command (same meaningful options, same backbone weights) → the same key."""
    meaningful = {name: getattr(opts, name, None) for name in KEY_OPTIONS}
    if meaningful["augment_views"] or getattr(opts, "mirror_views", False):
        meaningful.update({name: getattr(opts, name, None) for name in VIEW_OPTIONS})
    else:
        meaningful["augment_views"] = None  # as before the option existed
    text = json.dumps({"backbone": fingerprint, **meaningful}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def new_job_id(key: str) -> str:
    """UTC time first, so a job's runs sort after every earlier job's (newest wins)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{key[:6]}"


def chunk_run_id(job_id: str, chunk: int) -> str:
    """Chunk 0 carries the job id itself (a one-chunk job is one run, named as before);
    chunk i > 0 is `<job_id>-c000i`, which sorts after it."""
    return job_id if chunk == 0 else f"{job_id}-c{chunk:04d}"


def job_dir(output: str, job_id: str) -> str:
    return runs.join(output.rstrip("/"), JOBS_DIR, job_id)


@dataclasses.dataclass(frozen=True)
class Job:
    """A planned job: its folder and its record (job.json)."""

    path: str
    record: dict[str, Any]

    @property
    def job_id(self) -> str:
        return self.record["job_id"]

    @property
    def chunks(self) -> int:
        return int(self.record["chunks"])

    def run_ids(self) -> list[str]:
        return [chunk_run_id(self.job_id, chunk) for chunk in range(self.chunks)]

    def committed(self, output: str) -> list[bool]:
        base = runs.join(output.rstrip("/"), runs.RUNS_DIR)
        return [runs.exists(runs.join(base, run_id, runs.SUCCESS)) for run_id in self.run_ids()]


def write_job(path: str, record: dict[str, Any]) -> Job:
    runs.write_text(runs.join(path, JOB_FILE), json.dumps(record, indent=2) + "\n")
    return Job(path, record)


def job_folders(output: str) -> list[str]:
    """Every folder under `<out>/jobs/`, planned or not, oldest first."""
    base = runs.join(output.rstrip("/"), JOBS_DIR)
    if not runs.exists(base):
        return []
    matches = FileSystems.match([runs.join(base, "*", "*")])[0].metadata_list
    prefix = base.rstrip("/") + "/"
    return sorted({runs.join(base, m.path[len(prefix):].split("/")[0]) for m in matches
                   if m.path.startswith(prefix)})


def planned_jobs(output: str) -> list[Job]:
    """Jobs whose plan is committed (job.json present), oldest first."""
    found = []
    for path in job_folders(output):
        record_path = runs.join(path, JOB_FILE)
        if runs.exists(record_path):
            found.append(Job(path, json.loads(runs.read_text(record_path))))
    return found


def find_jobs(output: str, key: str) -> tuple[Optional[Job], Optional[Job]]:
    """(newest unfinished job, newest finished job) with this key, each None if there is none."""
    unfinished = finished = None
    for job in planned_jobs(output):
        if job.record.get("key") != key:
            continue
        if all(job.committed(output)):
            finished = job
        else:
            unfinished = job
    return unfinished, finished


def read_heartbeat(path: str) -> Optional[dict[str, Any]]:
    beat = runs.join(path, HEARTBEAT)
    if not runs.exists(beat):
        return None
    try:
        return json.loads(runs.read_text(beat))
    except (ValueError, OSError):
        return None


def is_alive(beat: Optional[dict[str, Any]], now: Optional[float] = None) -> bool:
    """Whether the driver that wrote `beat` still runs: on this host its process must exist
    (a SIGKILLed driver is dead at once); elsewhere it must have beaten recently."""
    if not beat or beat.get("finished"):
        return False
    now = time.time() if now is None else now
    if beat.get("host") == socket.gethostname():
        try:
            os.kill(int(beat["pid"]), 0)  # signal 0: existence check only, nothing is sent
        except (ProcessLookupError, ValueError, KeyError):
            return False
        except PermissionError:
            pass  # exists, owned by someone else
    return now - float(beat.get("time", 0)) < HEARTBEAT_STALE_S


class Heartbeat:
    """Rewrites `<job>/_HEARTBEAT` every few seconds from a daemon thread while the job runs."""

    def __init__(self, path: str, every_s: float = HEARTBEAT_EVERY_S):
        self._path = runs.join(path, HEARTBEAT)
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tv-heartbeat", daemon=True)

    def _beat(self, finished: bool = False) -> None:
        runs.write_text(self._path, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                                "time": time.time(), "finished": finished}))

    def _loop(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                if runs.exists(self._path):  # gone: the job folder was removed (nothing new)
                    self._beat()
            except Exception:  # noqa: BLE001 - a missed beat only makes the job look older
                pass

    def __enter__(self) -> "Heartbeat":
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        try:
            if runs.exists(self._path):  # not when the job folder was removed (nothing new)
                self._beat(finished=True)
        except Exception:  # noqa: BLE001 - a last beat missed only makes the job look older
            pass
