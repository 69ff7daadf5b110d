"""The union rule for training on several committed runs: each image_id once, newest run wins.

Runs are immutable, so a relabelled image (same bytes, new label, re-extracted by
`tv-extract --incremental`) leaves its old record in the older run, and two full extractions
into one output hold every image twice.  The training view reads each `image_id` from the
newest run holding it and skips the older records ("superseded"), in every split, so a
relabel replaces the old label instead of teaching both, and no image counts twice.

Only the `image_id`, `label` and `split` columns of the Parquet shards are read (a few bytes
per row, as numpy arrays, not Python sets); with a single run there is nothing to read.  All
of this is by image: an image's cached views (trainer.train.data.views) share its image_id, so skipping
`<run>|<image_id>` skips every view of it, and only view-0 rows are counted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from beam_jobs.cli.errors import UserError
from beam_jobs.runs.read import Run, id_columns
from schemas import record

_COLUMNS = (record.IMAGE_ID, record.LABEL, record.SPLIT)


@dataclasses.dataclass(frozen=True)
class Superseded:
    """Records the training view skips: keys `<run path>|<image_id>`, and their counts."""

    keys: tuple[str, ...] = ()
    counts: Mapping[str, Mapping[str, int]] = dataclasses.field(default_factory=dict)

    def count(self, split: str, label: str) -> int:
        return int(self.counts.get(split, {}).get(label, 0))


NONE = Superseded()


def _image_columns(run: Run, names: Sequence[str]) -> dict[str, list]:
    """The named columns of a run's images: view-0 rows only (shards written before views
    existed have no view column and hold only images)."""
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    columns: dict[str, list] = {name: [] for name in names}
    for split in record.SPLITS:
        for shard in run.shards(split, "parquet"):
            with FileSystems.open(shard, compression_type="uncompressed") as f:
                has_views = record.VIEW in pq.ParquetFile(f).schema_arrow.names
            for batch in id_columns(shard, tuple(names) + ((record.VIEW,) if has_views else ())):
                views = batch.get(record.VIEW, [record.ORIGINAL_VIEW] * len(batch[names[0]]))
                for name in names:
                    columns[name].extend(value for value, view in zip(batch[name], views)
                                         if view == record.ORIGINAL_VIEW)
    return columns


def _run_rows(run: Run) -> dict[str, np.ndarray]:
    return {name: np.asarray(values, dtype=object)
            for name, values in _image_columns(run, _COLUMNS).items()}


def newest_wins(runs: Sequence[Run]) -> Superseded:
    """Walk the runs newest first; a record whose image_id a newer run holds is superseded."""
    if len(runs) < 2:
        return NONE
    seen = np.array([], dtype="S64")
    keys: list[str] = []
    counts: dict[str, dict[str, int]] = {}
    for run in sorted(runs, key=lambda r: r.run_id, reverse=True):
        rows = _run_rows(run)
        ids = rows[record.IMAGE_ID].astype("S64")
        older = np.isin(ids, seen)
        for image_id, label, split in zip(ids[older], rows[record.LABEL][older],
                                          rows[record.SPLIT][older]):
            keys.append(f"{run.path}|{image_id.decode()}")
            per_split = counts.setdefault(split, {})
            per_split[label] = per_split.get(label, 0) + 1
        seen = np.union1d(seen, ids)
    return Superseded(tuple(keys), counts) if keys else NONE


def superseded_filter(superseded: Superseded, fmt: str) -> Callable | None:
    """`(records, shard_path) → records` without the superseded ones, for TFRecord shards;
    None when nothing is superseded.  The lookup table is built once, here, not per shard."""
    if not superseded.keys:
        return None
    if fmt != "tfrecord":
        raise UserError(f"{len(superseded.keys)} images are superseded by newer runs (relabelled"
                        f" or extracted twice), listed by --exclude or lost at extraction with "
                        f"their views left; only --format=tfrecord can skip them.")
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        tf.constant(superseded.keys), tf.ones(len(superseded.keys), tf.int64)), default_value=0)
    spec = {record.IMAGE_ID: tf.io.FixedLenFeature([], tf.string)}

    def drop_superseded(records: tf.data.Dataset, path: tf.Tensor) -> tf.data.Dataset:
        run_dir = tf.strings.regex_replace(path, "/[^/]+$", "")

        def keep(serialized: tf.Tensor) -> tf.Tensor:
            image_id = tf.io.parse_single_example(serialized, spec)[record.IMAGE_ID]
            return tf.equal(table.lookup(tf.strings.join([run_dir, image_id], "|")), 0)

        return records.filter(keep)

    return drop_superseded


def excluded_records(runs: Sequence[Run], superseded: Superseded,
                     identifiers: set[str]) -> tuple[Superseded, dict[str, int]]:
    """`tv-train --exclude`: add every record whose image_id or uri is listed to the skipped
    ones (the same filter and counts serve both); returns them and the excluded count per
    split.  A record already superseded is not counted twice."""
    keys, skipped = list(superseded.keys), set(superseded.keys)
    counts = {split: dict(per) for split, per in superseded.counts.items()}
    excluded: dict[str, int] = {}
    for run in runs:
        columns = _image_columns(run, _COLUMNS + (record.URI,))
        hits = [i for i, (image_id, uri) in enumerate(zip(columns[record.IMAGE_ID],
                                                          columns[record.URI]))
                if image_id in identifiers or uri in identifiers]
        for i in hits:
            key = f"{run.path}|{columns[record.IMAGE_ID][i]}"
            split, label = columns[record.SPLIT][i], columns[record.LABEL][i]
            if key in skipped:
                continue
            skipped.add(key)
            keys.append(key)
            counts.setdefault(split, {})[label] = counts.get(split, {}).get(label, 0) + 1
            excluded[split] = excluded.get(split, 0) + 1
    return Superseded(tuple(keys), counts), excluded
