"""Chunked extraction: a job's plan, and the graph pieces that extract one chunk of it.

The first pipeline of a job plans every input once (read, hash, dedup, split) and writes the
plan under `<out>/jobs/<job_id>/plan/`; each chunk is then extracted and committed as a run of
its own, so a killed job loses at most the chunk in flight.  An input's chunk is a stable hash
of its *uri*, not of its bytes: a chunk's pipeline can then pick its files from a listing
before reading a single byte (folder and manifest sources), and every outcome of one input
(its record, or its dead letter, whichever pass wrote it) lands in the same chunk.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_jobs.extract.plan.splits import DedupOutputs, is_repeat, usable
from beam_jobs.runs import read as runs
from beam_jobs.sources.elements import DEAD_LETTER, UNREADABLE, SourceImage, dead_letter

IMAGES = "images"  # plan/images-*.jsonl: one kept input per line
DEAD_LETTERS = "dead_letters"  # plan/dead_letters-*.jsonl: first-pass dead letters
SUMMARY = "_summary"  # plan/_summary.json: chunk count and inputs per chunk × split


def chunk_of(uri: str, chunks: int) -> int:
    """Stable across processes and runs (Python's hash() is salted per process)."""
    return int(hashlib.sha256(uri.encode("utf-8")).hexdigest()[:12], 16) % max(chunks, 1)


def chunk_count(planned: int, commit_every: int) -> int:
    return max(1, math.ceil(planned / max(commit_every, 1)))


class InChunk:
    """uri → whether it belongs to `chunk` of `chunks`; a picklable predicate for sources."""

    def __init__(self, chunks: int, chunk: int):
        self.chunks, self.chunk = chunks, chunk

    def __call__(self, uri: str) -> bool:
        return chunk_of(uri, self.chunks) == self.chunk


def letter_uri(line: str) -> str:
    return json.loads(line)["uri"]


def _plan_line(copy, chunks: int, split_of) -> str:
    split = split_of(copy)
    return json.dumps({"uri": copy.uri, "image_id": copy.image_id, "label": copy.label,
                       "split": split, "chunk": chunk_of(copy.uri, chunks)}, sort_keys=True)


def _summary(_, chunks: int, labels: list[str], per_chunk: Iterable[tuple[tuple[int, str], int]],
             letters: Iterable[tuple[int, int]]) -> str:
    planned: dict[str, dict[str, int]] = {}
    for (chunk, split), n in per_chunk:
        planned.setdefault(str(chunk), {})[split] = n
    return json.dumps({"chunks": chunks, "labels": labels, "planned": planned,
                       "first_pass_dead_letters": {str(c): n for c, n in letters}})


class WritePlan(beam.PTransform):
    """{kept copies, first-pass dead letters, sorted labels} → the plan files; `chunks` is a
    singleton view of the job's chunk count.

    `split_of(copy)` is the split the copy gets (deterministic from its bytes and source).
    """

    def __init__(self, plan_dir: str, chunks, split_of):
        super().__init__()
        self._plan_dir, self._chunks, self._split_of = plan_dir, chunks, split_of

    def expand(self, pcolls: dict[str, Any]):
        lines = pcolls["kept"] | "PlanLine" >> beam.Map(_plan_line, self._chunks, self._split_of)
        lines | "WriteImages" >> beam.io.WriteToText(runs.join(self._plan_dir, IMAGES),
                                                     file_name_suffix=".jsonl")
        letters = pcolls["dead_letters"] | "WithChunk" >> beam.Map(
            lambda line, n: json.dumps({"chunk": chunk_of(letter_uri(line), n), "line": line}),
            self._chunks)
        letters | "WriteLetters" >> beam.io.WriteToText(
            runs.join(self._plan_dir, DEAD_LETTERS), file_name_suffix=".jsonl")
        per_chunk = (lines
                     | "ChunkSplit" >> beam.Map(lambda line: (
                         json.loads(line)["chunk"], json.loads(line)["split"]))
                     | "CountPlanned" >> beam.combiners.Count.PerElement())
        per_chunk_letters = (letters
                             | "LetterChunk" >> beam.Map(lambda line: json.loads(line)["chunk"])
                             | "CountLetters" >> beam.combiners.Count.PerElement())
        return (pcolls["kept"].pipeline
                | "One" >> beam.Create([None])
                | "Summary" >> beam.Map(_summary, self._chunks,
                                        beam.pvalue.AsSingleton(pcolls["labels"]),
                                        beam.pvalue.AsList(per_chunk),
                                        beam.pvalue.AsList(per_chunk_letters))
                | "WriteSummary" >> beam.io.WriteToText(runs.join(self._plan_dir, SUMMARY),
                                                        file_name_suffix=".json",
                                                        shard_name_template=""))


def read_summary(plan_dir: str) -> dict[str, Any]:
    return json.loads(runs.read_text(runs.join(plan_dir, SUMMARY + ".json")))


class ReadChunkPlan(beam.PTransform):
    """The plan's lines of one chunk: `.images` (uri, (image_id, split)) and `.dead_letter`."""

    def __init__(self, plan_dir: str, chunk: int):
        super().__init__()
        self._plan_dir, self._chunk = plan_dir, chunk

    def expand(self, pbegin) -> DedupOutputs:
        chunk = self._chunk
        images = (pbegin
                  | "ReadPlanned" >> beam.io.ReadFromText(
                      runs.join(self._plan_dir, IMAGES + "*.jsonl"))
                  | "ParsePlanned" >> beam.Map(json.loads)
                  | "ThisChunk" >> beam.Filter(lambda entry: entry["chunk"] == chunk)
                  | "ByUri" >> beam.Map(lambda e: (e["uri"], (e["image_id"], e["split"]))))
        letters = (pbegin
                   | "ReadLetters" >> beam.io.ReadFromText(
                       runs.join(self._plan_dir, DEAD_LETTERS + "*.jsonl"))
                   | "ParseLetters" >> beam.Map(json.loads)
                   | "LettersOfChunk" >> beam.Filter(lambda entry: entry["chunk"] == chunk)
                   | "Line" >> beam.Map(lambda entry: entry["line"]))
        return DedupOutputs(kept=images, dead_letter=letters)


class _FollowChunkPlan(beam.DoFn):
    """SourceImage (a chunk's read) → (split, SourceImage) for the inputs the plan kept.

    Inputs the plan rejected are skipped (their dead letters come from the plan); a kept input
    whose bytes changed since it was planned, or that cannot be read any more, becomes an
    `unreadable` dead letter, so the job's accounting still balances and no chunk holds bytes
    another chunk may hold too.
    """

    def __init__(self):
        self._changed = Metrics.counter("extract", "changed_since_planned")

    def process(self, image: SourceImage, planned: dict) -> Iterator:
        entry = planned.get(image.uri)
        if entry is None or is_repeat(image):
            return
        image_id, split = entry
        if not usable(image) or image.image_id != image_id:
            self._changed.inc()
            detail = image.rejected[1] if image.rejected else "its bytes changed"
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(
                image.uri, "read", UNREADABLE, f"changed since the job was planned: {detail}"))
            return
        yield split, image


def _missing(joined: tuple[str, dict[str, list]]) -> Iterator[str]:
    uri, groups = joined
    if groups["planned"] and not groups["seen"]:
        yield dead_letter(uri, "read", UNREADABLE,
                          "gone since the job was planned (deleted or moved)")


class SelectChunk(beam.PTransform):
    """SourceImage → `.kept` (split, SourceImage) of the chunk's plan, and `.dead_letter` for
    planned inputs that changed or are gone since planning.  `planned` is (uri, (id, split))."""

    def __init__(self, planned):
        super().__init__()
        self._planned = planned

    def expand(self, images) -> DedupOutputs:
        out = images | "FollowPlan" >> beam.ParDo(
            _FollowChunkPlan(), beam.pvalue.AsDict(self._planned)).with_outputs(
                DEAD_LETTER, main="kept")
        seen = images | "SeenUri" >> beam.Map(lambda image: (image.uri, None))
        planned = self._planned | "PlannedUri" >> beam.Map(lambda kv: (kv[0], None))
        gone = ({"planned": planned, "seen": seen}
                | "JoinUris" >> beam.CoGroupByKey()
                | "Gone" >> beam.FlatMap(_missing))
        letters = (out[DEAD_LETTER], gone) | "ChunkLetters" >> beam.Flatten()
        return DedupOutputs(kept=out.kept, dead_letter=letters)
