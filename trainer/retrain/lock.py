"""A lock so two overlapping retrain schedules never interleave.

Locally the lock is a file created with `O_CREAT | O_EXCL` (the kernel lets exactly one
process create it) holding `{pid, host, token, acquired, expires}`.  A lock is *stale*, and is
taken over, when its expiry has passed or when its holder ran on this host and that pid is
gone (a `kill -9` leaves the file behind; the next scheduled run must not wait for the expiry).

Object stores (`gs://…`, `s3://…`) have no exclusive create through Beam's `FileSystems`, so
there the lock is a *lease object*: written only when absent or expired, then read back after
a short pause, and held only if it still carries our token (last writer wins, and the loser
sees it).  That is best effort, not consensus; schedules minutes apart never race that
closely, and the expiry bounds the damage of a crashed holder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import socket
import time
from collections.abc import Iterator

from apache_beam.io.filesystems import FileSystems

DEFAULT_TTL_S = 6 * 3600
_LEASE_SETTLE_S = 1.0
_UNWRITTEN_GRACE_S = 30.0


class LockHeld(Exception):
    """Another holder has the lock; `holder` is what its lock file says."""

    def __init__(self, path: str, holder: dict):
        self.path, self.holder = path, holder
        if not holder:
            super().__init__(f"another retrain holds the lock {path} (just taken); this run "
                             f"does nothing.")
            return
        expires = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.get("expires", 0)))
        super().__init__(f"another retrain holds the lock {path} (pid {holder.get('pid')} on "
                         f"{holder.get('host')}, until {expires}); this run does nothing.")


@dataclasses.dataclass(frozen=True)
class Lease:
    path: str
    token: str
    ttl_s: float


def _holder(ttl_s: float, token: str) -> dict:
    now = time.time()
    return {"pid": os.getpid(), "host": socket.gethostname(), "token": token,
            "acquired": now, "expires": now + ttl_s}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(holder: dict, now: float | None = None) -> bool:
    """Expired, unreadable, or held by a process of this host that no longer exists."""
    if not holder:
        return True
    if (now or time.time()) >= float(holder.get("expires", 0)):
        return True
    return holder.get("host") == socket.gethostname() and not _pid_alive(int(holder["pid"]))


def _is_remote(path: str) -> bool:
    return "://" in path


def _read(path: str) -> dict:
    try:
        if _is_remote(path):
            with FileSystems.open(path) as f:
                return json.loads(f.read().decode("utf-8"))
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _create_local(path: str, holder: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(holder, f)
        f.flush()
        os.fsync(f.fileno())
    return True


def _write_remote(path: str, holder: dict) -> None:
    with FileSystems.create(path, mime_type="application/json") as f:
        f.write(json.dumps(holder).encode("utf-8"))


def acquire(path: str, ttl_s: float = DEFAULT_TTL_S) -> Lease:
    """Take the lock or raise `LockHeld`; a stale lock is taken over (once)."""
    token = secrets.token_hex(8)
    if _is_remote(path):
        current = _read(path) if FileSystems.exists(path) else {}
        if current and not is_stale(current):
            raise LockHeld(path, current)
        _write_remote(path, _holder(ttl_s, token))
        time.sleep(_LEASE_SETTLE_S)
        current = _read(path)
        if current.get("token") != token:
            raise LockHeld(path, current)
        return Lease(path, token, ttl_s)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    for _ in range(2):
        if _create_local(path, _holder(ttl_s, token)):
            return Lease(path, token, ttl_s)
        current = _read(path)
        if not is_stale(current) or (not current and _age_s(path) < _UNWRITTEN_GRACE_S):
            raise LockHeld(path, current)  # an empty file: its creator is still writing it
        _bury_stale(path, current)
    raise LockHeld(path, _read(path))


def _age_s(path: str) -> float:
    try:
        return time.time() - os.path.getmtime(path)
    except FileNotFoundError:
        return float("inf")


def _bury_stale(path: str, stale: dict) -> None:
    """Move the stale lock aside; if a racer replaced it meanwhile, put theirs back."""
    grave = f"{path}.stale-{secrets.token_hex(4)}"
    try:
        os.rename(path, grave)
    except FileNotFoundError:
        return  # a racer buried it first
    moved = _read(grave)
    if moved.get("token") != stale.get("token"):
        with contextlib.suppress(FileExistsError):
            os.link(grave, path)  # a fresh lock: restore it, and the retry will see it held
    os.unlink(grave)


def renew(lease: Lease) -> None:
    """Push the expiry forward between long steps, if the lock is still ours."""
    if _read(lease.path).get("token") != lease.token:
        return
    holder = dict(_holder(lease.ttl_s, lease.token))
    if _is_remote(lease.path):
        _write_remote(lease.path, holder)
        return
    staging = f"{lease.path}.{lease.token}"
    with open(staging, "w") as f:
        json.dump(holder, f)
    os.replace(staging, lease.path)


def release(lease: Lease) -> None:
    """Remove the lock if it is still ours (a taken-over stale lock is not)."""
    if _read(lease.path).get("token") != lease.token:
        return
    if _is_remote(lease.path):
        FileSystems.delete([lease.path])
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lease.path)


@contextlib.contextmanager
def held(path: str, ttl_s: float = DEFAULT_TTL_S) -> Iterator[Lease]:
    """`with held(path):` the lock for the block's duration; raises `LockHeld` if taken."""
    lease = acquire(path, ttl_s)
    try:
        yield lease
    finally:
        release(lease)
