"""Beam's worker processes inherit our stderr; keep TensorFlow's start-up banner out of it.

Each worker process that imports TensorFlow prints the banner (`beam_jobs.cli` filters the
driver's own at import), before absl logging exists, so no environment variable stops it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

from beam_jobs.cli.launch import _TF_STARTUP_NOISE, VERBOSE_FLAG


@contextlib.contextmanager
def children_stderr_filtered() -> Iterator[None]:
    """While a pipeline runs: fd 2, which Beam's worker processes inherit and where their
    TensorFlow prints its start-up banner (once per process, before absl logging exists, so
    no environment variable stops it), goes through a pipe that drops that noise.  Python's own
    `sys.stderr` keeps writing to the real stderr, so a progress bar still sees a terminal.
    Only in a real process (not under a test's captured stderr), and not with --verbose or
    TV_TF_STARTUP_LOGS=1."""
    if (sys.stderr is not sys.__stderr__ or os.environ.get("TV_TF_STARTUP_LOGS") == "1"
            or VERBOSE_FLAG in sys.argv[1:] or not _has_fd(2)):
        yield
        return
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    pump = threading.Thread(target=_replay_without_noise, args=(read_end, os.dup(original)),
                            name="stderr-filter", daemon=True)
    pump.start()
    python_stderr = sys.stderr
    sys.stderr = open(os.dup(original), "w", buffering=1, encoding=python_stderr.encoding,
                      errors="backslashreplace")
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = python_stderr
        os.dup2(original, 2)  # our end of the pipe closes; the pump ends with the last worker
        pump.join(timeout=5)
        os.close(original)


def _has_fd(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def _replay_without_noise(read_end: int, target: int) -> None:
    try:
        with open(read_end, "rb") as pipe:
            for line in pipe:  # keep draining even if stderr went away: writers never block
                if not _TF_STARTUP_NOISE.search(line.decode("utf-8", "replace")):
                    with contextlib.suppress(OSError):
                        os.write(target, line)
    finally:
        os.close(target)
