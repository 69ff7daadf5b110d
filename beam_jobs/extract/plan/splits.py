"""Deterministic split assignment and de-duplication, keyed on `image_id`.

A split depends only on the image bytes and the requested percentages, so it is identical
across runs, runners and incremental deltas; the same bytes can never land in two splits.
"""

from __future__ import annotations

import json
from typing import Iterable, Iterator, NamedTuple, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_jobs.cli.errors import UserError
from beam_jobs.sources.elements import (
    CONFLICTING_LABELS,
    DEAD_LETTER,
    DUPLICATE,
    EMPTY,
    UNREADABLE,
    SourceImage,
    dead_letter,
)

TRAIN, VALIDATION, TEST = "train", "validation", "test"
_BUCKETS = 10_000
_HOLD_OUT_FIRST = {TEST: 0, VALIDATION: 1}  # which copy of the same bytes is kept


def parse_percentages(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or any(v < 0 for v in values) or sum(values) <= 0:
        raise UserError(f"--splits={text} must be three non-negative numbers like 80,10,10.")
    total = sum(values)
    return tuple(v / total for v in values)  # type: ignore[return-value]


def _bucket(image_id: str) -> float:
    return (int(image_id[:12], 16) % _BUCKETS) / _BUCKETS


def assign_split(image_id: str, source_split: str | None,
                 percentages: Sequence[float]) -> str:
    """The source's own test or validation split wins; its train split yields
    train/validation by hash (validation carved out at the requested ratio)."""
    train, validation, test = percentages
    position = _bucket(image_id)
    if source_split in (TEST, VALIDATION):
        return source_split
    if source_split == TRAIN:
        share = validation / (train + validation) if train + validation else 0.0
        return VALIDATION if position < share else TRAIN
    if position < test:
        return TEST
    return VALIDATION if position < test + validation else TRAIN


class Copy(NamedTuple):
    """What de-duplication needs of an input: no pixels, so grouping never holds images."""

    image_id: str
    uri: str
    label: str
    source_split: str | None


class _SetAsideUnusable(beam.DoFn):
    """Inputs with no bytes to compare leave before grouping: unreadable ones, and empty files
    (all zero-byte files share one SHA-256, so grouping would call them duplicates)."""

    def process(self, image: SourceImage) -> Iterator:
        if image.rejected is not None:
            reason, detail = image.rejected
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(image.uri, "read", reason,
                                                                    detail))
        elif image.encoded is not None and len(image.encoded) == 0:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(image.uri, "decode", EMPTY,
                                                                    "zero bytes"))
        else:
            yield Copy(image.image_id, image.uri, image.label, image.source_split)


def usable(image: SourceImage) -> bool:
    """Whether `_SetAsideUnusable` lets the image through (the second read skips the rest)."""
    return image.rejected is None and not (image.encoded is not None and len(image.encoded) == 0)


class DedupOutputs(NamedTuple):
    kept: beam.PCollection
    dead_letter: beam.PCollection


class SetAsideUnusable(beam.PTransform):
    """SourceImage → `.kept` Copy (usable inputs, pixels dropped) and `.dead_letter` lines."""

    def expand(self, images) -> DedupOutputs:
        out = images | beam.ParDo(_SetAsideUnusable()).with_outputs(DEAD_LETTER, main="kept")
        return DedupOutputs(kept=out.kept, dead_letter=out[DEAD_LETTER])


class _KeepOnePerImage(beam.DoFn):
    """One image_id, all its copies: keep one, dead-letter the rest with the reason."""

    def __init__(self, percentages: Sequence[float]):
        self._percentages = tuple(percentages)
        self._duplicates = Metrics.counter("extract", "duplicates")
        self._conflicts = Metrics.counter("extract", "conflicting_labels")

    def process(self, keyed: tuple[str, Iterable[Copy]]) -> Iterator:
        image_id, copies = keyed
        copies = sorted(copies, key=lambda c: (_HOLD_OUT_FIRST.get(c.source_split, 2), c.uri))
        labels = sorted({c.label for c in copies})
        if len(labels) > 1:
            for copy in copies:
                self._conflicts.inc()
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(
                    copy.uri, "dedup", CONFLICTING_LABELS,
                    f"same bytes labelled {labels} at {[c.uri for c in copies][:5]}"))
            return
        kept, rest = copies[0], copies[1:]
        for copy in rest:
            self._duplicates.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(
                copy.uri, "dedup", DUPLICATE, f"same bytes as {kept.uri}"))
        yield kept


class DeduplicateAndSplit(beam.PTransform):
    """Copy → `.kept` Copy (one per image_id) and `.dead_letter` JSON lines for the others.

    Only ids, uris and labels are grouped, never image bytes: on runners that hold a shuffle in
    memory (the DirectRunner) a GroupByKey over the images themselves would grow with the
    collection.  `SelectPlanned` then streams the images a second time and skips the copies
    this pass rejected.  A test copy wins over a train copy of the same bytes so the test set
    never shrinks into training data.
    """

    def __init__(self, percentages: Sequence[float]):
        super().__init__()
        self._percentages = percentages

    def expand(self, copies) -> DedupOutputs:
        kept = (copies
                | "KeyById" >> beam.Map(lambda copy: (copy.image_id, copy))
                | "GroupCopies" >> beam.GroupByKey()
                | "KeepOne" >> beam.ParDo(_KeepOnePerImage(self._percentages)).with_outputs(
                    DEAD_LETTER, main="kept"))
        return DedupOutputs(kept=kept.kept, dead_letter=kept[DEAD_LETTER])


class _FollowPlan(beam.DoFn):
    """SourceImage (second read) → (split, SourceImage) unless the first pass set it aside.

    The split is recomputed from the bytes, exactly as the first pass would for the kept copy
    (its own source split wins).  The side input holds only the uris the first pass rejected
    or skipped, so it does not grow with the collection (except for --incremental, whose
    already-extracted uris are skipped too).  An input that can no longer be read on the second
    pass becomes an `unreadable` dead letter, so the run's accounting still balances.
    """

    def __init__(self, percentages: Sequence[float]):
        self._percentages = tuple(percentages)
        self._unreadable = Metrics.counter("extract", "unreadable_on_second_read")

    def process(self, image: SourceImage, skip: dict) -> Iterator:
        if image.uri in skip or is_repeat(image):
            return
        if not usable(image):
            self._unreadable.inc()
            detail = image.rejected[1] if image.rejected else "zero bytes"
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(
                image.uri, "read", UNREADABLE, f"changed while the job ran: {detail}"))
            return
        yield assign_split(image.image_id, image.source_split, self._percentages), image


class SelectPlanned(beam.PTransform):
    """SourceImage → `.kept` (split, SourceImage) but for the `skip` uris, and `.dead_letter`.

    `skip` is a PCollection of uris: the first pass's dead letters and skipped inputs.
    """

    def __init__(self, skip, percentages: Sequence[float]):
        super().__init__()
        self._skip = skip
        self._percentages = percentages

    def expand(self, images) -> DedupOutputs:
        skip = self._skip | "AsKeys" >> beam.Map(lambda uri: (uri, None))
        out = images | beam.ParDo(_FollowPlan(self._percentages),
                                  beam.pvalue.AsDict(skip)).with_outputs(DEAD_LETTER,
                                                                         main="kept")
        return DedupOutputs(kept=out.kept, dead_letter=out[DEAD_LETTER])


def is_repeat(image: SourceImage) -> bool:
    """A repeated listing of one uri, set aside by its source (see sources.manifest)."""
    return image.rejected is not None and image.rejected[0] in (DUPLICATE, CONFLICTING_LABELS)


def rejected_uri(dead_letter_line: str) -> list[str]:
    """The uri the second pass must skip for a first-pass dead letter: none for the repeated
    listings of a uri (the source reads it once in both passes), else the letter's uri."""
    letter = json.loads(dead_letter_line)
    if letter["stage"] == "read" and letter["reason"] == DUPLICATE:
        return []
    return [letter["uri"]]
