"""Beam file sinks for a run: TFRecord + Parquet per split, dead letters, and the tallies.

Files are written only through Beam's sinks, which stage into a temp folder and finalize
exactly once, so a bundle retried by the runner never duplicates rows.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

import apache_beam as beam

import schemas
from schemas import record
from beam_jobs import runs
from beam_jobs.splits import TEST, TRAIN, VALIDATION

SPLITS = (TRAIN, VALIDATION, TEST)
STATS_FILE = "_stats"  # transient: folded into manifest.json by the commit, then deleted


class WriteShards(beam.PTransform):
    """Record dicts → `<run>/<split>-SSSSS-of-NNNNN.tfrecord.gz` and `<run>/parquet/…`."""

    def __init__(self, run_dir: str, feature_dim: int, num_shards: int):
        super().__init__()
        self._run_dir = run_dir
        self._feature_dim = feature_dim
        self._num_shards = num_shards

    def expand(self, records):
        by_split = records | "BySplit" >> beam.Partition(
            lambda r, n: SPLITS.index(r[record.SPLIT]), len(SPLITS))
        arrow_schema = schemas.arrow_schema(self._feature_dim)
        for split, part in zip(SPLITS, by_split):
            (part
             | f"{split}/ToExample" >> beam.Map(schemas.to_tf_example)
             | f"{split}/WriteTFRecord" >> beam.io.WriteToTFRecord(
                 runs.join(self._run_dir, split), file_name_suffix=".tfrecord.gz",
                 num_shards=self._num_shards,
                 compression_type=beam.io.filesystem.CompressionTypes.GZIP))
            (part
             | f"{split}/ToArrow" >> beam.Map(record.to_arrow_row)
             | f"{split}/WriteParquet" >> beam.io.WriteToParquet(
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


def _tally(_, inputs: int, accepted: Iterable[tuple[tuple[str, str], int]],
           reasons: Iterable[tuple[str, int]]) -> str:
    counts: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    for (split, label), n in accepted:
        counts[split][label] = n
    return json.dumps({"inputs": inputs, "counts": counts, "dead_letters": dict(reasons)})


class WriteStats(beam.PTransform):
    """Counts every input once (accepted per split × label, rejected per reason) into one file.

    Computed from the data itself rather than from Beam metrics, so the accounting is exact on
    every runner, even those that report metrics only approximately.
    """

    def __init__(self, run_dir: str):
        super().__init__()
        self._run_dir = run_dir

    def expand(self, pcolls: dict[str, Any]):
        inputs = pcolls["inputs"] | "CountInputs" >> beam.combiners.Count.Globally()
        accepted = (pcolls["records"]
                    | "SplitLabel" >> beam.Map(lambda r: (r[record.SPLIT], r[record.LABEL]))
                    | "CountAccepted" >> beam.combiners.Count.PerElement())
        reasons = (pcolls["dead_letters"]
                   | "Reason" >> beam.Map(lambda line: json.loads(line)["reason"])
                   | "CountRejected" >> beam.combiners.Count.PerElement())
        return (pcolls["inputs"].pipeline
                | "One" >> beam.Create([None])
                | "Tally" >> beam.Map(_tally, beam.pvalue.AsSingleton(inputs),
                                      beam.pvalue.AsList(accepted), beam.pvalue.AsList(reasons))
                | "Write" >> beam.io.WriteToText(runs.join(self._run_dir, STATS_FILE),
                                                 file_name_suffix=".json", shard_name_template=""))
