"""What `tv-train --exclude=FILE` leaves out: uris or image_ids, read from an audit CSV or a list.

- label_issues.csv, outliers.csv (a `flagged` column): the flagged rows only;
- near_duplicates.csv (`uri_a`, `uri_b`): the second member of **every** pair, the copy: the
  audit orients pairs so that `b` is the training-side image of a cross-split pair, so the
  leak goes and the test set stays the same (comparable before and after);
- any other CSV with a `uri` or `image_id` column: every row;
- anything else: one uri or image_id per line (blank lines and `#` comments skipped).
An entry matches a record when it equals the record's image_id or its uri.
"""

from __future__ import annotations

import csv
import io

from beam_jobs.cli.errors import UserError

_TRUE = {"true", "1", "yes", "y", "t"}


def _read(path: str) -> str:
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        raise UserError(f"--exclude {path} does not exist.")
    try:
        with FileSystems.open(path, compression_type="uncompressed") as f:
            return f.read().decode("utf-8-sig")
    except (OSError, IOError) as err:
        raise UserError(f"Cannot read --exclude={path} ({err.__class__.__name__}).") from err


def _from_table(rows: list[dict[str, str]], header: list[str]) -> set[str]:
    if "uri_b" in header:
        key = "image_id_b" if "image_id_b" in header else "uri_b"
        return {row[key] for row in rows if row.get(key)}
    key = "image_id" if "image_id" in header else "uri"
    if "flagged" in header:
        rows = [row for row in rows if str(row.get("flagged", "")).strip().lower() in _TRUE]
    return {row[key] for row in rows if row.get(key)}


def read_exclusions(path: str) -> set[str]:
    """The uris / image_ids the file asks to leave out (see the module docstring)."""
    text = _read(path)
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return set()
    header = next(csv.reader([lines[0]]))
    if any(name in header for name in ("uri", "image_id", "uri_b")):
        rows = list(csv.DictReader(io.StringIO(text)))
        return _from_table(rows, header)
    return {line.strip() for line in lines if not line.lstrip().startswith("#")}
