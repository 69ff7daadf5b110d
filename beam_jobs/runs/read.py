"""The reading side of the run contract: which runs exist, and what each one holds.

A run exists only once its `_SUCCESS` marker is written (the commit); everything here lists and
opens runs through `FileSystems`, so `gs://` and other Beam filesystems work like local paths.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
from typing import Any, Iterator, Sequence

from apache_beam.io.filesystems import FileSystems

from beam_jobs.cli.errors import UserError
from beam_jobs.runs.atomic import write_text  # noqa: F401 - runs.write_text, atomic
from schemas import record
from schemas.run import (  # noqa: F401 - the layout's names, read here as runs.MANIFEST …
    DEAD_LETTERS_DIR,
    LABELS,
    MANIFEST,
    PARQUET_DIR,
    RUNS_DIR,
    SUCCESS,
    TRANSFORM_FN,
)


def join(base: str, *parts: str) -> str:
    return FileSystems.join(base, *parts)


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def read_text(path: str) -> str:
    with FileSystems.open(path) as f:
        return f.read().decode("utf-8")


@dataclasses.dataclass(frozen=True)
class Run:
    """A committed run: its folder and its manifest (read once)."""

    path: str
    manifest: dict[str, Any]

    @property
    def run_id(self) -> str:
        return self.manifest["run_id"]

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])

    @property
    def feature_dim(self) -> int:
        return int(self.manifest["backbone"]["feature_dim"])

    @property
    def fingerprint(self) -> str:
        return self.manifest["backbone"]["fingerprint"]

    def count(self, split: str) -> int:
        return sum(self.manifest["counts"].get(split, {}).values())

    def shards(self, split: str, fmt: str = "tfrecord") -> list[str]:
        if fmt == "tfrecord":
            pattern = join(self.path, f"{split}-*-of-*.tfrecord.gz")
        elif fmt == "parquet":
            pattern = join(self.path, PARQUET_DIR, f"{split}-*-of-*.parquet")
        else:
            raise UserError(f"Unknown shard format {fmt!r}: use tfrecord or parquet.")
        return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def open_run(path: str) -> Run:
    """Open one run folder, refusing anything not committed or of an unknown schema version."""
    from schemas.record import READABLE_SCHEMA_VERSIONS

    path = path.rstrip("/")
    if not exists(join(path, SUCCESS)):
        raise UserError(f"{path} is not a committed run (no {SUCCESS}); it may still be "
                        f"running or may have been interrupted.")
    manifest = json.loads(read_text(join(path, MANIFEST)))
    if manifest.get("schema_version") not in READABLE_SCHEMA_VERSIONS:
        raise UserError(f"{path} was written with schema version {manifest.get('schema_version')}"
                        f", this version reads only {', '.join(map(str, READABLE_SCHEMA_VERSIONS))}.")
    return Run(path, manifest)


def committed_runs(output: str) -> list[Run]:
    """All committed runs under an extract output folder, oldest first (run ids sort by time)."""
    pattern = join(output.rstrip("/"), RUNS_DIR, "*", SUCCESS)
    matches = FileSystems.match([pattern])[0].metadata_list
    run_dirs = sorted(posixpath.dirname(m.path) for m in matches)
    return [open_run(d) for d in run_dirs]


def resolve_runs(data: str) -> list[Run]:
    """`--data` may name one run folder or an extract output folder holding many."""
    data = data.rstrip("/")
    if exists(join(data, SUCCESS)):
        return [open_run(data)]
    if exists(join(data, MANIFEST)):
        return [open_run(data)]  # raises the "not committed" sentence
    runs = committed_runs(data)
    if not runs:
        raise UserError(f"No committed run found under {data}: run tv-extract first, or point "
                        f"--data at a folder holding runs/<run_id>/{SUCCESS}.")
    return runs


def one_backbone(runs: Sequence[Run], data: str, purpose: str) -> str:
    """The fingerprint the runs share; values of two backbones live in different spaces, so
    mixing them is a user error (`purpose` ends the sentence: "train on", "audit")."""
    fingerprints = sorted({run.fingerprint for run in runs})
    if len(fingerprints) > 1:
        raise UserError(f"The runs under {data} come from different backbones "
                        f"({', '.join(fingerprints)}); {purpose} runs of one backbone only.")
    return fingerprints[0] if fingerprints else ""


def id_columns(shard: str, columns: Sequence[str] = (record.IMAGE_ID, record.LABEL),
               batch_rows: int = 65_536) -> Iterator[dict[str, list[str]]]:
    """Column batches of one Parquet shard, only the named columns: a few bytes per row."""
    import pyarrow.parquet as pq

    with FileSystems.open(shard, compression_type="uncompressed") as f:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_rows, columns=list(columns)):
            yield batch.to_pydict()
