"""Beam file sinks for a run: TFRecord + Parquet per split, dead letters, and the tallies.

Files are written only through Beam's sinks, which stage into a temp folder and finalize
exactly once, so a bundle retried by the runner never duplicates rows.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Iterator

import apache_beam as beam

import schemas
from beam_jobs.runs import read as runs
from schemas import record
from schemas.run import STATS_FILE

SPLITS = record.SPLITS


ARROW_BATCH_ROWS = 1024  # records per Arrow batch: a Parquet row group is about this size


def _by_split(batch) -> Iterator[tuple[str, Any]]:
    """One mixed batch → (split, the rows of that split), for each split present."""
    import pyarrow as pa
    import pyarrow.compute as pc

    splits = batch.column(record.SPLIT)
    for split in SPLITS:
        mask = pc.equal(splits, pa.scalar(split))
        if pc.any(mask).as_py():
            yield split, batch.filter(mask)


class ToRecordBatches(beam.PTransform):
    """Record dicts → (split, `pa.RecordBatch`) in the run's Arrow schema.

    Everything after the backbone works on these: tf.Examples are encoded in C++ a batch at a
    time, Parquet gets whole row groups and TFT its RecordBatch input, where converting 1,280
    floats per record in Python cost more than the forward pass per image.
    """

    def __init__(self, feature_dim: int, rows: int = ARROW_BATCH_ROWS):
        super().__init__()
        self._feature_dim = feature_dim
        self._rows = rows

    def expand(self, records):
        return (records
                | "Batch" >> beam.BatchElements(min_batch_size=self._rows,
                                                max_batch_size=self._rows)
                | "ToArrow" >> beam.Map(record.to_record_batch, self._feature_dim)
                | "BySplit" >> beam.FlatMap(_by_split))


def _table(batch):
    import pyarrow as pa

    return pa.Table.from_batches([batch])


class WriteShards(beam.PTransform):
    """(split, RecordBatch) → `<run>/<split>-SSSSS-of-NNNNN.tfrecord.gz` and `<run>/parquet/…`.

    num_shards=0 lets each worker write its own shard as the batches stream past (no shuffle);
    a fixed count shuffles every record first, which in-memory runners hold whole.
    """

    def __init__(self, run_dir: str, feature_dim: int, num_shards: int):
        super().__init__()
        self._run_dir = run_dir
        self._feature_dim = feature_dim
        self._num_shards = num_shards

    def expand(self, batches):
        by_split = batches | "PerSplit" >> beam.Partition(
            lambda kv, n: SPLITS.index(kv[0]), len(SPLITS))
        arrow_schema = schemas.arrow_schema(self._feature_dim)
        for split, part in zip(SPLITS, by_split):
            part = part | f"{split}/Batch" >> beam.Values()
            (part
             | f"{split}/ToExamples" >> beam.FlatMap(record.to_tf_examples)
             | f"{split}/WriteTFRecord" >> beam.io.WriteToTFRecord(
                 runs.join(self._run_dir, split), file_name_suffix=".tfrecord.gz",
                 num_shards=self._num_shards,
                 compression_type=beam.io.filesystem.CompressionTypes.GZIP))
            (part
             | f"{split}/ToTable" >> beam.Map(_table)
             | f"{split}/WriteParquet" >> beam.io.WriteToParquetBatched(
                 runs.join(self._run_dir, runs.PARQUET_DIR, split), arrow_schema,
                 file_name_suffix=".parquet", num_shards=self._num_shards))
        return by_split


class WriteDeadLetters(beam.PTransform):
    def __init__(self, run_dir: str):
        super().__init__()
        self._run_dir = run_dir

    def expand(self, lines):
        return lines | beam.io.WriteToText(
            runs.join(self._run_dir, runs.DEAD_LETTERS_DIR, "dead_letters"),
            file_name_suffix=".jsonl")


def originals(batch) -> Iterator[Any]:
    """The rows of a record batch that are images themselves (view 0), not their views;
    nothing when it holds none."""
    import pyarrow as pa
    import pyarrow.compute as pc

    mask = pc.equal(batch.column(record.VIEW), pa.scalar(record.ORIGINAL_VIEW, pa.int64()))
    if pc.all(mask).as_py():
        yield batch
    elif pc.any(mask).as_py():
        yield batch.filter(mask)


def _split_label_counts(split_batch) -> Iterable[tuple[tuple[str, str], int]]:
    """Images (view 0 records) per split × label: what every reader of `counts` expects."""
    split, batch = split_batch
    found = []
    for images in originals(batch):
        labels = images.column(record.LABEL).value_counts()
        found += [((split, str(item["values"])), int(item["counts"]))
                  for item in labels.to_pylist()]
    return found


def _split_view_counts(split_batch) -> Iterable[tuple[tuple[str, int], int]]:
    """Records per split × view index: what the shards hold, views included."""
    split, batch = split_batch
    views = batch.column(record.VIEW).value_counts()
    return [((split, int(item["values"])), int(item["counts"])) for item in views.to_pylist()]


def _tally(_, inputs: int, accepted: Iterable[tuple[tuple[str, str], int]],
           reasons: Iterable[tuple[str, int]], skipped: Iterable[tuple[str, int]] = (),
           views: Iterable[tuple[tuple[str, int], int]] = ()) -> str:
    counts: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    for (split, label), n in accepted:
        counts[split][label] = n
    view_counts: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    for (split, view), n in sorted(views):
        view_counts[split][str(view)] = n
    skipped_files = dict(sorted(skipped, key=lambda kv: (-kv[1], kv[0])))
    return json.dumps({"inputs": inputs, "counts": counts, "view_counts": view_counts,
                       "dead_letters": dict(reasons), "skipped_files": skipped_files})


def skipped_summary(skipped_files: dict[str, int]) -> str:
    """`skipped 3 .txt, 1 .DS_Store` for the job's summary line; empty when nothing was."""
    if not skipped_files:
        return ""
    return "skipped " + ", ".join(f"{n:,} {key}" for key, n in skipped_files.items())


class WriteStats(beam.PTransform):
    """Counts every input once (accepted per split × label, rejected per reason) into one file,
    the records per split × view (`view_counts`: what the shards hold, views included), and
    the files that were not inputs by their `skipped_files` key (`sources.skipped_files`).

    Computed from the data itself rather than from Beam metrics, so the accounting is exact on
    every runner, even those that report metrics only approximately.
    """

    def __init__(self, run_dir: str):
        super().__init__()
        self._run_dir = run_dir

    def expand(self, pcolls: dict[str, Any]):
        inputs = pcolls["inputs"] | "CountInputs" >> beam.combiners.Count.Globally()
        accepted = (pcolls["batches"]
                    | "SplitLabel" >> beam.FlatMap(_split_label_counts)
                    | "CountAccepted" >> beam.CombinePerKey(sum))
        views = (pcolls["batches"]
                 | "SplitView" >> beam.FlatMap(_split_view_counts)
                 | "CountViews" >> beam.CombinePerKey(sum))
        reasons = (pcolls["dead_letters"]
                   | "Reason" >> beam.Map(lambda line: json.loads(line)["reason"])
                   | "CountRejected" >> beam.combiners.Count.PerElement())
        skipped = pcolls["skipped_files"] | "CountSkipped" >> beam.combiners.Count.PerElement()
        return (pcolls["inputs"].pipeline
                | "One" >> beam.Create([None])
                | "Tally" >> beam.Map(_tally, beam.pvalue.AsSingleton(inputs),
                                      beam.pvalue.AsList(accepted), beam.pvalue.AsList(reasons),
                                      beam.pvalue.AsList(skipped), beam.pvalue.AsList(views))
                | "Write" >> beam.io.WriteToText(runs.join(self._run_dir, STATS_FILE),
                                                 file_name_suffix=".json", shard_name_template=""))
