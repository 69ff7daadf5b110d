"""What Flink's REST API says about the cluster and its jobs (the evidence that Flink, not our
own process, did the work)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://localhost:{port}{path}", timeout=5) as response:
        return json.load(response)


def taskmanager_count(port: int) -> int:
    """Registered TaskManagers, 0 while the JobManager is not answering."""
    try:
        return int(get(port, "/overview")["taskmanagers"])
    except (OSError, urllib.error.URLError, ValueError, KeyError):
        return 0


def jobs(port: int) -> list[dict]:
    """Every job the cluster knows, newest first: jid, name, state, start-time, duration …"""
    listed = get(port, "/jobs/overview")["jobs"]
    return sorted(listed, key=lambda job: job["start-time"], reverse=True)


def taskmanagers_of_job(port: int, jid: str) -> set[str]:
    """The TaskManager ids that ran at least one subtask of the job."""
    used: set[str] = set()
    for vertex in get(port, f"/jobs/{jid}")["vertices"]:
        for tm in get(port, f"/jobs/{jid}/vertices/{vertex['id']}/taskmanagers")["taskmanagers"]:
            used.add(tm["taskmanager-id"])
    return used


def job_exceptions(port: int, jid: str) -> list[str]:
    """Root causes Flink recorded for a job's failures and restarts (empty when none)."""
    history = get(port, f"/jobs/{jid}/exceptions").get("exceptionHistory", {})
    return [entry.get("exceptionName", "") + ": " + (entry.get("stacktrace") or "")[:200]
            for entry in history.get("entries", [])]


def records_by_taskmanager(port: int, jid: str, stage: str) -> dict[str, int]:
    """Records read per TaskManager by the job's vertices whose name contains `stage` (a Beam
    transform name, e.g. "DecodeImages"): how the work of that stage was spread."""
    spread: dict[str, int] = {}
    for vertex in get(port, f"/jobs/{jid}")["vertices"]:
        if stage not in vertex["name"]:
            continue
        for subtask in get(port, f"/jobs/{jid}/vertices/{vertex['id']}")["subtasks"]:
            tm = subtask.get("taskmanager-id", subtask.get("host", "?"))
            spread[tm] = spread.get(tm, 0) + int(subtask["metrics"]["read-records"])
    return spread
