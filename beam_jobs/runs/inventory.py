"""What an extract output folder holds (`tv-runs list`) and what may safely go (`tv-runs gc`).

Every run folder and job folder under `--output` gets a state:

| state | run folder | job folder |
|---|---|---|
| committed / complete | `_SUCCESS` written | every chunk's run committed |
| in progress | its job's driver is alive (heartbeat) | its driver is alive |
| resumable | — | plan committed, chunks missing, driver gone: rerun the same command |
| abandoned | no `_SUCCESS`, no live driver | killed while planning (no `job.json`) |

Only *abandoned* folders older than `--older_than` are ever removed: never a committed run,
never a resumable plan (its committed chunks need it to resume without extracting twice), never
anything a live driver is writing.  All I/O goes through Beam's filesystems.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import time
from typing import Optional

from apache_beam.io.filesystems import FileSystems

from beam_jobs.runs import extract_jobs as jobs
from beam_jobs.runs import read as runs

COMMITTED, COMPLETE, IN_PROGRESS = "committed", "complete", "in progress"
RESUMABLE, ABANDONED = "resumable", "abandoned"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One folder under the output: a run (`runs/<id>`) or a job (`jobs/<id>`)."""

    kind: str  # "run" | "job"
    name: str
    path: str
    state: str
    size_bytes: int
    age_s: Optional[float]  # since its newest file was written; None when it holds no file
    images: Optional[int] = None
    backbone: str = ""
    job: str = ""  # run: "<job id> chunk i/n"; job: "i/n chunks committed"
    views: Optional[int] = None  # run: records besides its images (augmented views, mirrors)


def _files(folder: str) -> list:
    try:
        return FileSystems.match([runs.join(folder, "**")])[0].metadata_list
    except Exception:  # noqa: BLE001 - an empty or vanished folder holds nothing
        return []


def _size_and_age(folder: str, now: float) -> tuple[int, Optional[float]]:
    files = _files(folder)
    if not files:
        return 0, None
    return (sum(m.size_in_bytes for m in files),
            max(0.0, now - max(m.last_updated_in_seconds for m in files)))


def _children(folder: str) -> list[str]:
    prefix = folder.rstrip("/") + "/"
    found = {m.path[len(prefix):].split("/")[0] for m in _files(folder)
             if m.path.startswith(prefix)}
    return sorted(runs.join(folder, name) for name in found if name)


def _owner(run_id: str, job_ids: list[str]) -> Optional[str]:
    for job_id in job_ids:
        if run_id == job_id or run_id.startswith(job_id + "-c"):
            return job_id
    return None


def _job_entries(output: str, now: float) -> tuple[list[Entry], dict[str, bool]]:
    entries, alive = [], {}
    planned = {job.job_id: job for job in jobs.planned_jobs(output)}
    for path in jobs.job_folders(output):
        job_id = posixpath.basename(path.rstrip("/"))
        alive[job_id] = jobs.is_alive(jobs.read_heartbeat(path), now)
        size, age = _size_and_age(path, now)
        job = planned.get(job_id)
        if job is None:
            state, detail = (IN_PROGRESS if alive[job_id] else ABANDONED), "planning"
        else:
            done = sum(job.committed(output))
            state = (COMPLETE if done == job.chunks else IN_PROGRESS if alive[job_id]
                     else RESUMABLE)
            detail = f"{done}/{job.chunks} chunks committed"
        entries.append(Entry("job", job_id, path, state, size, age, job=detail))
    return entries, alive


def _run_entry(path: str, alive: dict[str, bool], now: float) -> Entry:
    run_id = posixpath.basename(path.rstrip("/"))
    size, age = _size_and_age(path, now)
    owner = _owner(run_id, sorted(alive, key=len, reverse=True))
    if runs.exists(runs.join(path, runs.SUCCESS)):
        manifest = json.loads(runs.read_text(runs.join(path, runs.MANIFEST)))
        job = manifest.get("job") or {}
        detail = f"{job['id']} chunk {job['chunk'] + 1}/{job['chunks']}" if job else ""
        images = sum(n for per_label in manifest.get("counts", {}).values()
                     for n in per_label.values())
        records = sum(n for per_view in manifest.get("view_counts", {}).values()
                      for n in per_view.values())
        return Entry("run", run_id, path, COMMITTED, size, age, images,
                     manifest.get("backbone", {}).get("name", ""), detail,
                     views=max(records - images, 0))
    state = IN_PROGRESS if owner and alive.get(owner) else ABANDONED
    return Entry("run", run_id, path, state, size, age, job=owner or "")


def inventory(output: str, now: Optional[float] = None) -> list[Entry]:
    """Every job folder, then every run folder, under `output`, oldest first."""
    now = time.time() if now is None else now
    job_entries, alive = _job_entries(output, now)
    base = runs.join(output.rstrip("/"), runs.RUNS_DIR)
    run_dirs = _children(base) if runs.exists(base) else []
    return job_entries + [_run_entry(path, alive, now) for path in run_dirs]


def collectable(entries: list[Entry], older_than_s: float) -> list[Entry]:
    """The abandoned folders untouched for at least `older_than_s` seconds."""
    return [e for e in entries if e.state == ABANDONED
            and (e.age_s is None or e.age_s >= older_than_s)]


def remove(entries: list[Entry]) -> None:
    for entry in entries:
        if FileSystems.exists(entry.path):
            FileSystems.delete([entry.path])
