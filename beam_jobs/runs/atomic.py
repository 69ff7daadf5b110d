"""Atomic output: a reader sees the whole file or the previous one, never half a file (a run's
manifest, a job's plan, an audit CSV, a report page).

Locally the file is written beside its destination under a temporary name and `os.replace`d
(atomic on POSIX within a filesystem).  Elsewhere (`gs://`, `s3://` …) it is written through
Beam's `FileSystems` under a temporary name and renamed; on object stores an object becomes
visible only when its upload completes, so there too no reader sees a partial file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _is_local(path: str) -> bool:
    return "://" not in path


@contextlib.contextmanager
def atomic_text(path: str) -> Iterator[IO[str]]:
    """A text stream that becomes `path` only when the block ends without an exception."""
    if _is_local(path):
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as stream:
                yield stream
            os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        return
    yield from _atomic_remote(path)


def _atomic_remote(path: str) -> Iterator[IO[str]]:
    from apache_beam.io.filesystems import FileSystems

    buffer = io.StringIO()
    yield buffer
    temp = f"{path}.tmp-{uuid.uuid4().hex}"
    with FileSystems.create(temp, mime_type="text/plain") as f:
        f.write(buffer.getvalue().encode("utf-8"))
    FileSystems.rename([temp], [path])


def write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """Write a CSV atomically; returns the number of data rows."""
    count = 0
    with atomic_text(path) as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
            count += 1
    return count


def write_json(path: str, content: Any) -> None:
    with atomic_text(path) as stream:
        json.dump(content, stream, indent=2, sort_keys=False)
        stream.write("\n")


def write_text(path: str, text: str) -> None:
    with atomic_text(path) as stream:
        stream.write(text)
