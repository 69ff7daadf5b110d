"""Incremental extraction: skip images a committed run of the same backbone already holds.

`tv-extract --incremental` reads only the `image_id` and `label` columns of the earlier runs'
Parquet shards (never the transfer values), joins them with the source by `image_id` in the
pipeline (a CoGroupByKey, so the known ids never gather on the driver), and lets through:

- images whose `image_id` no committed run of this backbone fingerprint holds (new bytes);
- images whose label differs from the label of the *newest* run holding them (a relabel);
  the delta run then holds the new label, and the training view lets the newest run win.

A different backbone has a different fingerprint, so none of its runs count as known: the
run is a full extraction.  Images removed from the source stay in the runs that hold them
(runs are immutable); see README "Incremental runs and scheduled retraining".
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_jobs.extract.plan.splits import TEST, TRAIN, VALIDATION
from beam_jobs.runs import commit
from beam_jobs.runs import read as runs
from beam_jobs.runs.read import id_columns
from beam_jobs.sources.elements import SourceImage
from schemas import record

ALREADY_EXTRACTED_FILE = "_already_extracted"  # transient, like the stats file
_SOURCE, _KNOWN = "source", "known"


def known_runs(output: str, fingerprint: str) -> list[runs.Run]:
    """Committed runs under `output` extracted with this backbone fingerprint, oldest first."""
    if not runs.exists(runs.join(output.rstrip("/"), runs.RUNS_DIR)):
        return []
    return [run for run in runs.committed_runs(output) if run.fingerprint == fingerprint]


def known_shards(known: Sequence[runs.Run]) -> list[tuple[str, str]]:
    """(run_id, Parquet shard) for every split of every known run."""
    return [(run.run_id, shard) for run in known
            for split in (TRAIN, VALIDATION, TEST) for shard in run.shards(split, "parquet")]


def image_labels(shard: str) -> Iterator[tuple[str, str]]:
    """(image_id, label) of each image a shard holds: its view 0 rows only, since views share
    their image's id and label (shards written before views existed hold only images)."""
    import pyarrow.parquet as pq

    with FileSystems.open(shard, compression_type="uncompressed") as f:
        has_views = record.VIEW in pq.ParquetFile(f).schema_arrow.names
    columns = (record.IMAGE_ID, record.LABEL) + ((record.VIEW,) if has_views else ())
    for batch in id_columns(shard, columns):
        views = batch[record.VIEW] if has_views else [record.ORIGINAL_VIEW] * len(
            batch[record.IMAGE_ID])
        for image_id, label, view in zip(batch[record.IMAGE_ID], batch[record.LABEL], views):
            if view == record.ORIGINAL_VIEW:
                yield image_id, label


class _ReadKnownLabels(beam.DoFn):
    """(run_id, shard) → (image_id, (run_id, label)) for each image of the shard."""

    def process(self, run_shard: tuple[str, str]) -> Iterator[tuple[str, tuple[str, str]]]:
        run_id, shard = run_shard
        for image_id, label in image_labels(shard):
            yield image_id, (run_id, label)


class _KeepNewOrRelabelled(beam.DoFn):
    """Per image_id: the source's copies pass unless the newest known run has the same label."""

    def __init__(self):
        self._counters = {"new": Metrics.counter("incremental", "new_images"),
                          "relabelled": Metrics.counter("incremental", "relabelled_images"),
                          _KNOWN: Metrics.counter("incremental", "already_extracted")}

    def process(self, joined: tuple[str, dict[str, Iterable]]) -> Iterator:
        _, groups = joined
        copies: list[SourceImage] = list(groups[_SOURCE])
        known = list(groups[_KNOWN])  # known but absent from the source: the old record stays
        verdict = _verdict(copies, known)
        self._counters[verdict].inc(len(copies))
        for copy in copies:
            yield beam.pvalue.TaggedOutput(_KNOWN, copy.uri) if verdict == _KNOWN else copy


def _verdict(copies: list[SourceImage], known: list[tuple[str, str]]) -> str:
    """new (no run holds the bytes), relabelled (the newest run holding them has another
    label; run ids sort by time) or known."""
    if not known:
        return "new"
    newest_label = max(known)[1]
    return "relabelled" if any(copy.label != newest_label for copy in copies) else _KNOWN


def _count_line(_, count: int) -> str:
    return json.dumps({"already_extracted": count})


class Delta(NamedTuple):
    new: beam.PCollection  # Copy: not in any known run, or relabelled
    known_uris: beam.PCollection  # uris of the copies skipped as already extracted


class DropAlreadyExtracted(beam.PTransform):
    """Copy → the copies no known run holds (or holds under another label).

    Writes how many it dropped to `<run_dir>/_already_extracted.json` (read back and removed
    by `pop_already_extracted` before the commit), counted from the data like the run stats.
    """

    def __init__(self, known: Sequence[runs.Run], run_dir: str):
        super().__init__()
        self._shards = known_shards(known)
        self._run_dir = run_dir

    def expand(self, images):
        known = (images.pipeline
                 | "KnownShards" >> beam.Create(self._shards)
                 | "SpreadShards" >> beam.Reshuffle()
                 | "ReadKnownIds" >> beam.ParDo(_ReadKnownLabels()))
        keyed = images | "KeyById" >> beam.Map(lambda image: (image.image_id, image))
        kept = ({_SOURCE: keyed, _KNOWN: known}
                | "JoinKnownIds" >> beam.CoGroupByKey()
                | "KeepNew" >> beam.ParDo(_KeepNewOrRelabelled()).with_outputs(_KNOWN, main="new"))
        skipped = kept[_KNOWN] | "CountKnown" >> beam.combiners.Count.Globally()
        (images.pipeline
         | "One" >> beam.Create([None])
         | "KnownCount" >> beam.Map(_count_line, beam.pvalue.AsSingleton(skipped))
         | "WriteKnownCount" >> beam.io.WriteToText(
             runs.join(self._run_dir, ALREADY_EXTRACTED_FILE), file_name_suffix=".json",
             shard_name_template=""))
        return Delta(new=kept.new, known_uris=kept[_KNOWN])


def pop_already_extracted(run_dir: str) -> int:
    """How many source images the delta skipped; removes the transient count file."""
    path = runs.join(run_dir, ALREADY_EXTRACTED_FILE + ".json")
    if not runs.exists(path):
        return 0
    count = json.loads(runs.read_text(path))["already_extracted"]
    FileSystems.delete([path])
    return int(count)


def nothing_new(run_dir: str, parents: Sequence[str], already_extracted: int) -> dict:
    """Zero new images: remove the uncommitted folder, say so, and commit no empty run."""
    commit.abandon(run_dir)
    print(f"Nothing new to extract: all {already_extracted} images of the source are already "
          f"in committed runs {list(parents)} of this backbone; no run was written.")
    return {"run_id": None, "parent_runs": list(parents), "inputs": 0, "accepted": 0,
            "already_extracted": already_extracted}
