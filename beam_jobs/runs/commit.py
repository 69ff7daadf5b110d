"""Publishing a run: verify the accounting, write the manifest, then `_SUCCESS` last.

On object stores a rename is not atomic, so the marker, not the folder, is the commit: a run
killed at any point before the marker is invisible to every reader (see `beam_jobs.runs`).
"""

from __future__ import annotations

import json
import platform
from typing import Any, Sequence

from apache_beam.io.filesystems import FileSystems

import schemas
from beam_jobs.cli.errors import UserError
from beam_jobs.runs import read as runs
from beam_jobs.runs import verify
from schemas.run import METADATA_SCHEMA, STATS_FILE


def library_versions() -> dict[str, str]:
    import apache_beam
    import numpy
    import pyarrow
    import tensorflow

    return {"python": platform.python_version(), "apache_beam": apache_beam.__version__,
            "tensorflow": tensorflow.__version__, "numpy": numpy.__version__,
            "pyarrow": pyarrow.__version__}


def read_stats(run_dir: str) -> dict[str, Any]:
    return json.loads(runs.read_text(runs.join(run_dir, STATS_FILE + ".json")))


def check_accounting(stats: dict[str, Any]) -> tuple[int, int]:
    """inputs must equal accepted + rejected; anything else means an image was lost."""
    accepted = sum(n for per_label in stats["counts"].values() for n in per_label.values())
    rejected = sum(stats["dead_letters"].values())
    if stats["inputs"] != accepted + rejected:
        raise RuntimeError(f"Accounting mismatch: {stats['inputs']} inputs but {accepted} "
                           f"accepted + {rejected} rejected; the run is not committed.")
    return accepted, rejected


def check_usable(stats: dict[str, Any], accepted: int, rejected: int) -> None:
    """A job with no input, or none usable, is the user's to fix (one of a job's several
    chunks may hold only dead letters: that is fine)."""
    if stats["inputs"] == 0:
        raise UserError("The source holds no images: nothing to extract.")
    if accepted == 0:
        raise UserError(f"None of the {rejected} images could be used; see the dead letters "
                        f"for the reasons ({stats['dead_letters']}).")


def commit(run_dir: str, manifest: dict[str, Any], stats: dict[str, Any],
           labels: Sequence[str] | None = None, allow_empty: bool = False) -> dict[str, Any]:
    """Check the tallies and the files against each other, write labels, schema and manifest,
    drop the transient stats, then the marker.

    `labels` is the job's label list, which the records' label_id index (every run of a
    chunked job shares it); by default the labels the tallies hold.
    """
    accepted, rejected = check_accounting(stats)
    if not allow_empty:
        check_usable(stats, accepted, rejected)
    verify.check_on_disk(run_dir, stats)
    if labels is None:
        labels = sorted({label for per_label in stats["counts"].values() for label in per_label})
    labels = list(labels)
    manifest = dict(manifest, labels=labels, counts=stats["counts"],
                    view_counts=stats.get("view_counts", {}), inputs=stats["inputs"],
                    accepted=accepted, rejected=rejected, dead_letters=stats["dead_letters"],
                    skipped_files=stats.get("skipped_files", {}),
                    schema_version=schemas.SCHEMA_VERSION)
    feature_dim = manifest["backbone"]["feature_dim"]
    runs.write_text(runs.join(run_dir, runs.LABELS), "".join(f"{label}\n" for label in labels))
    runs.write_text(runs.join(run_dir, METADATA_SCHEMA), str(schemas.metadata_schema(feature_dim)))
    publish(run_dir, manifest)
    return manifest


def publish(folder: str, manifest: dict[str, Any]) -> None:
    """The last steps of every commit (a run, or batch predictions): manifest.json, the
    transient stats dropped, then `_SUCCESS`, the marker readers go by."""
    runs.write_text(runs.join(folder, runs.MANIFEST), json.dumps(manifest, indent=2) + "\n")
    FileSystems.delete([runs.join(folder, STATS_FILE + ".json")])
    runs.write_text(runs.join(folder, runs.SUCCESS), "")


def abandon(run_dir: str) -> None:
    """Remove what a failed run wrote; harmless if it wrote nothing (readers ignore it anyway)."""
    try:
        if FileSystems.exists(run_dir):
            FileSystems.delete([run_dir])
    except Exception:  # noqa: BLE001 - best effort: an uncommitted run is invisible regardless
        pass
