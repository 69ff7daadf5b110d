"""Reading one input's bytes through Beam's filesystems, with retries for transient errors.

Object stores fail now and then (timeouts, 503s, connection resets); a retry a moment later
usually succeeds.  A file that is gone, or that still fails after the last attempt, is not a
reason to stop a job over millions of files: it becomes one `unreadable` dead letter.
"""

from __future__ import annotations

import dataclasses
import random
import time
from typing import Callable, Iterator, Optional

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_jobs.sources.elements import UNREADABLE, SourceImage

# Image files are read as they are stored: a `.gz` suffix must not make Beam inflate them.
AS_STORED = CompressionTypes.UNCOMPRESSED


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: delays of about base, 2·base, 4·base … seconds."""

    attempts: int = 4
    base_delay_s: float = 0.25
    max_delay_s: float = 8.0


class ReadFailure(Exception):
    """The bytes could not be read, even after retrying; `detail` says why."""


def _open_and_read(uri: str, compression: str) -> bytes:
    with FileSystems.open(uri, compression_type=compression) as f:
        return f.read()


def read_with_retry(uri: str, policy: RetryPolicy = RetryPolicy(),
                    compression: str = AS_STORED,
                    sleep: Callable[[float], None] = time.sleep) -> bytes:
    """All bytes of `uri`; retries errors that may pass, gives up at once on a missing file."""
    retries = Metrics.counter("extract", "read_retries")
    for attempt in range(policy.attempts):
        try:
            return _open_and_read(uri, compression)
        except Exception as err:  # noqa: BLE001 - filesystems raise many types (IOError, HTTP…)
            last = f"{type(err).__name__}: {err}"
            if attempt + 1 == policy.attempts or not _still_exists(uri):
                break
            retries.inc()
            delay = min(policy.max_delay_s, policy.base_delay_s * 2 ** attempt)
            sleep(delay * (0.5 + random.random()))
    raise ReadFailure(f"after {attempt + 1} attempt(s): {last}"[:500])


def _still_exists(uri: str) -> bool:
    try:
        return FileSystems.exists(uri)
    except Exception:  # noqa: BLE001 - cannot tell: assume it exists and retry
        return True


def matches(pattern: str) -> bool:
    """Whether a path or glob names at least one file (on any Beam filesystem)."""
    try:
        return bool(FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # noqa: BLE001 - a missing exact path raises on some filesystems
        return False


def read_source_image(uri: str, label: str, source_split: Optional[str] = None,
                      policy: RetryPolicy = RetryPolicy()) -> SourceImage:
    """A SourceImage with the file's bytes, or an `unreadable` one that becomes a dead letter."""
    try:
        encoded = read_with_retry(uri, policy)
    except ReadFailure as err:
        Metrics.counter("extract", "unreadable").inc()
        return SourceImage.unusable(uri, UNREADABLE, str(err), label=label)
    return SourceImage(uri=uri, label=label, encoded=encoded, source_split=source_split)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """An input found by listing, not read yet: limits and spreading work on these, cheaply."""

    uri: str
    label: str
    source_split: Optional[str] = None


class ReadCandidate(beam.DoFn):
    """Candidate → SourceImage with its bytes (or an `unreadable` one); each counted once."""

    def __init__(self, policy: RetryPolicy = RetryPolicy()):
        self._policy = policy
        self._read = Metrics.counter("extract", "images_read")

    def process(self, candidate: Candidate) -> Iterator[SourceImage]:
        self._read.inc()
        yield read_source_image(candidate.uri, candidate.label, candidate.source_split,
                                self._policy)
