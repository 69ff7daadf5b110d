"""`--source=KIND:URI` → a PTransform yielding `SourceImage`s; one module per kind."""

from __future__ import annotations

from typing import Mapping, Optional

import apache_beam as beam

from beam_jobs.errors import UserError

KINDS = ("folder", "idx")


def parse_limit(text: Optional[str]) -> Mapping[str, int] | int | None:
    """`--limit=500` caps every part of the source; `--limit=train=5000,test=1000` caps by the
    source's own split names (the first N records, for demos and smoke tests)."""
    if not text:
        return None
    try:
        if "=" not in text:
            return int(text)
        return {k.strip(): int(v) for k, v in (part.split("=", 1) for part in text.split(","))}
    except ValueError:
        raise UserError(f"--limit={text} is not a number nor a list like train=5000,test=1000.")


def read_images(spec: str, limit=None, label_names: Optional[list[str]] = None
                ) -> beam.PTransform:
    """Pick the source module for `KIND:URI`."""
    kind, sep, uri = spec.partition(":")
    if not sep or not uri:
        raise UserError(f"--source={spec} must look like KIND:URI with KIND in {', '.join(KINDS)}.")
    if kind == "idx":
        from beam_jobs.sources.idx import ReadIdx

        return ReadIdx(uri, limit=limit, label_names=label_names)
    if kind == "folder":
        from beam_jobs.sources.folder import ReadFolder

        return ReadFolder(uri, limit=limit)
    raise UserError(f"Unknown source kind {kind!r}: use one of {', '.join(KINDS)}.")
