"""Deterministic split assignment and de-duplication, keyed on `image_id`.

A split depends only on the image bytes and the requested percentages, so it is identical
across runs, runners and incremental deltas; the same bytes can never land in two splits.
"""

from __future__ import annotations

from typing import Iterable, Iterator, NamedTuple, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_jobs.elements import (CONFLICTING_LABELS, DUPLICATE, EMPTY, SourceImage,
                                dead_letter)
from beam_jobs.errors import UserError

TRAIN, VALIDATION, TEST = "train", "validation", "test"
DEAD_LETTER = "dead_letter"
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
            yield image


class DedupOutputs(NamedTuple):
    kept: beam.PCollection
    dead_letter: beam.PCollection


class _KeepOnePerImage(beam.DoFn):
    """One image_id, all its copies: keep one, dead-letter the rest with the reason."""

    def __init__(self, percentages: Sequence[float]):
        self._percentages = tuple(percentages)
        self._duplicates = Metrics.counter("extract", "duplicates")
        self._conflicts = Metrics.counter("extract", "conflicting_labels")

    def process(self, keyed: tuple[str, Iterable[SourceImage]]) -> Iterator:
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
        yield assign_split(image_id, kept.source_split, self._percentages), kept


class DeduplicateAndSplit(beam.PTransform):
    """SourceImage → `.kept` (split, SourceImage) and `.dead_letter` JSON lines.

    A test copy wins over a train copy of the same bytes so the test set never shrinks into
    training data.
    """

    def __init__(self, percentages: Sequence[float]):
        super().__init__()
        self._percentages = percentages

    def expand(self, images) -> DedupOutputs:
        usable = images | "SetAsideUnusable" >> beam.ParDo(_SetAsideUnusable()).with_outputs(
            DEAD_LETTER, main="usable")
        kept = (usable.usable
                | "KeyById" >> beam.Map(lambda image: (image.image_id, image))
                | "GroupCopies" >> beam.GroupByKey()
                | "KeepOne" >> beam.ParDo(_KeepOnePerImage(self._percentages)).with_outputs(
                    DEAD_LETTER, main="kept"))
        dead = ((usable.dead_letter, kept.dead_letter)
                | "DeadLetters" >> beam.Flatten())
        return DedupOutputs(kept=kept.kept, dead_letter=dead)
