"""A list of inputs: CSV lines `uri,label[,split]` (header optional) or JSONL objects
`{"uri": …, "label": …, "split": …}`, one input per line.

URIs may point to any Beam filesystem; relative ones resolve against the manifest's folder.
The manifest may be a glob of several files.  A line that cannot be parsed is still an input
the user listed, so it becomes an `unreadable` dead letter rather than vanishing.
"""

from __future__ import annotations

import csv
import json
import posixpath
from typing import Iterable, Iterator, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_jobs.cli.errors import UserError
from beam_jobs.sources.base import KeepFirst, OnlyWanted
from beam_jobs.sources.elements import CONFLICTING_LABELS, DUPLICATE, UNREADABLE, SourceImage
from beam_jobs.sources.reading import Candidate, ReadCandidate, matches

_SPLITS = {"train": "train", "training": "train", "validation": "validation",
           "val": "validation", "valid": "validation", "dev": "validation",
           "test": "test", "testing": "test"}
_HEADER_URI = {"uri", "url", "path", "file", "filename", "image"}


class BadLine(ValueError):
    pass


def resolve(base_dir: str, uri: str) -> str:
    """Absolute paths and `scheme://` URIs stay; anything else is relative to the manifest."""
    if "://" in uri or uri.startswith("/"):
        return uri
    return FileSystems.join(base_dir, uri) if "://" in base_dir else posixpath.normpath(
        posixpath.join(base_dir, uri))


def parse_line(line: str) -> Optional[tuple[str, str, Optional[str]]]:
    """(uri, label, split or None), None for blank lines and a CSV header; BadLine otherwise."""
    text = line.strip().lstrip("\ufeff")
    if not text:
        return None
    if text.startswith("{"):
        try:
            row = json.loads(text)
        except ValueError as err:
            raise BadLine(f"not valid JSON: {err}") from None
        fields = [row.get("uri"), row.get("label"), row.get("split")]
    else:
        fields = next(csv.reader([text]))
        if fields[0].strip().lower() in _HEADER_URI and len(fields) > 1 and (
                fields[1].strip().lower() in ("label", "class")):
            return None
        fields = (fields + [None])[:3] if len(fields) in (2, 3) else None
    if not fields or not fields[0] or fields[1] in (None, ""):
        raise BadLine("expected uri,label[,split]")
    split = str(fields[2]).strip().lower() if fields[2] not in (None, "") else None
    if split is not None and split not in _SPLITS:
        raise BadLine(f"unknown split {fields[2]!r}: use train, validation or test")
    return str(fields[0]).strip(), str(fields[1]).strip(), _SPLITS.get(split or "")


class _ParseLine(beam.DoFn):
    """(manifest file, line) → Candidate, or an unusable SourceImage for a bad line."""

    def process(self, element: tuple[str, str]) -> Iterator:
        manifest, line = element
        try:
            parsed = parse_line(line)
        except BadLine as err:
            yield beam.pvalue.TaggedOutput("bad", SourceImage.unusable(
                f"{manifest}: {line.strip()[:200]}", UNREADABLE, f"manifest line: {err}"))
            return
        if parsed is not None:
            uri, label, split = parsed
            yield Candidate(resolve(posixpath.dirname(manifest), uri), label, split)


class ReadManifest(beam.PTransform):
    def __init__(self, manifest: str, limit=None, uri_filter=None):
        super().__init__()
        self._manifest = manifest
        self._limit = limit
        self._uri_filter = uri_filter

    def expand(self, pbegin):
        if not matches(self._manifest):
            raise UserError(f"The manifest {self._manifest} does not exist.")
        lines = (pbegin
                 | "ReadLines" >> beam.io.ReadFromTextWithFilename(self._manifest)
                 | "Parse" >> beam.ParDo(_ParseLine()).with_outputs("bad", main="candidates"))
        listed = (lines.candidates
                  | "Limit" >> KeepFirst(self._limit)
                  | "ByUri" >> beam.Map(lambda candidate: (candidate.uri, candidate))
                  | "GroupListings" >> beam.GroupByKey()  # also spreads the reads
                  | "ReadOnce" >> beam.ParDo(_CollapseRepeats()).with_outputs(
                      "repeats", main="once"))
        images = (listed.once
                  | "Wanted" >> OnlyWanted(self._uri_filter)  # before any byte is read
                  | "Read" >> beam.ParDo(ReadCandidate()))
        return (images, listed.repeats, lines.bad) | "WithBadLines" >> beam.Flatten()


class _CollapseRepeats(beam.DoFn):
    """A file listed on several lines is read once; the other listings are accounted for as
    `duplicate` (same label) or, with different labels, every listing as `conflicting_labels`.

    The extract job reads a source twice (plan, then extract) and relies on each uri naming
    one input; repeated manifest lines are settled here, identically in both passes.
    """

    def process(self, listings: tuple[str, Iterable[Candidate]]) -> Iterator:
        uri, candidates = listings
        ordered = sorted(candidates, key=lambda c: (c.label, c.source_split or ""))
        labels = sorted({c.label for c in ordered})
        if len(labels) > 1:
            for candidate in ordered:
                yield beam.pvalue.TaggedOutput("repeats", SourceImage.unusable(
                    uri, CONFLICTING_LABELS, f"listed {len(ordered)} times in the manifest "
                    f"with labels {labels}", label=candidate.label))
            return
        yield ordered[0]
        for candidate in ordered[1:]:
            yield beam.pvalue.TaggedOutput("repeats", SourceImage.unusable(
                uri, DUPLICATE, f"listed {len(ordered)} times in the manifest; read once",
                label=candidate.label))

