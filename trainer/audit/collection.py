"""The audited collection: every example of the committed runs, all splits, in memory.

The audit looks at each image once, the way training sees the union (trainer.train.data.union: newest run
wins an image_id), so a relabelled image is judged by its new label.  Rows are read from the
runs' Parquet shards (columnar, through Beam's `FileSystems`, so `gs://` reads like a local
path); only the image itself (`record.ORIGINAL_VIEW`) is read: cached augmented views and
mirrors share its image_id and would come back as perfect near duplicates of it.
Memory: D float32 per example (1280 × 4 B = 5 KiB), the only large array.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from beam_jobs.cli.errors import UserError
from beam_jobs.runs.read import Run, one_backbone, resolve_runs
from schemas import record
from trainer.train.data.union import newest_wins

_TEXT_COLUMNS = (record.IMAGE_ID, record.URI, record.LABEL, record.SPLIT)


@dataclasses.dataclass(frozen=True)
class Collection:
    """Row i of every array is one image."""

    runs: tuple[Run, ...]
    labels: tuple[str, ...]  # sorted union vocabulary; label_ids index it
    image_ids: np.ndarray
    uris: np.ndarray
    splits: np.ndarray
    label_ids: np.ndarray  # int64 [N]
    transfer_values: np.ndarray  # float32 [N, D]

    def __len__(self) -> int:
        return len(self.image_ids)

    def given_labels(self) -> np.ndarray:
        return np.asarray(self.labels, dtype=object)[self.label_ids]


def _read_shard(path: str, feature_dim: int) -> tuple[dict[str, list], list[np.ndarray]]:
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    text: dict[str, list] = {name: [] for name in _TEXT_COLUMNS}
    values: list[np.ndarray] = []
    with FileSystems.open(path, compression_type="uncompressed") as f:
        parquet = pq.ParquetFile(f)
        has_view = record.VIEW in parquet.schema_arrow.names  # shards before schema 2 lack it
        columns = list(_TEXT_COLUMNS) + [record.TRANSFER_VALUES] + ([record.VIEW] if has_view
                                                                    else [])
        for batch in parquet.iter_batches(batch_size=8192, columns=columns):
            keep = (np.asarray(batch.column(record.VIEW).to_numpy(zero_copy_only=False))
                    == record.ORIGINAL_VIEW if has_view else np.ones(batch.num_rows, bool))
            for name in _TEXT_COLUMNS:
                text[name].extend(np.asarray(batch.column(name).to_pylist(), object)[keep])
            flat = batch.column(record.TRANSFER_VALUES).flatten().to_numpy()
            values.append(flat.astype(np.float32).reshape(-1, feature_dim)[keep])
    return text, values


def check_runs(runs: Sequence[Run], data: str) -> None:
    """One backbone only: distances between values of two backbones mean nothing."""
    one_backbone(runs, data, "audit")


def load_collection(data: str, run_ids: Sequence[str] = ()) -> Collection:
    """Every image of the committed runs under `data` (or only the named `run_ids`)."""
    runs = resolve_runs(data)
    if run_ids:
        missing = sorted(set(run_ids) - {run.run_id for run in runs})
        if missing:
            raise UserError(f"No committed run {', '.join(missing)} under {data}.")
        runs = [run for run in runs if run.run_id in set(run_ids)]
    check_runs(runs, data)
    skipped = set(newest_wins(runs).keys)
    text: dict[str, list] = {name: [] for name in _TEXT_COLUMNS}
    values: list[np.ndarray] = []
    for run in runs:
        for split in record.SPLITS:
            for shard in run.shards(split, "parquet"):
                shard_text, shard_values = _read_shard(shard, run.feature_dim)
                keep = np.asarray([f"{run.path}|{i}" not in skipped
                                   for i in shard_text[record.IMAGE_ID]], bool)
                for name in _TEXT_COLUMNS:
                    text[name].extend(np.asarray(shard_text[name], object)[keep])
                if shard_values:
                    values.append(np.concatenate(shard_values)[keep])
    return _collection(tuple(runs), text, values)


def _collection(runs: tuple[Run, ...], text: dict[str, list],
                values: list[np.ndarray]) -> Collection:
    labels = tuple(sorted(set(text[record.LABEL])))
    index = {label: i for i, label in enumerate(labels)}
    feature_dim = runs[0].feature_dim
    return Collection(
        runs=runs, labels=labels,
        image_ids=np.asarray(text[record.IMAGE_ID], object),
        uris=np.asarray(text[record.URI], object),
        splits=np.asarray(text[record.SPLIT], object),
        label_ids=np.asarray([index[label] for label in text[record.LABEL]], np.int64),
        transfer_values=(np.concatenate(values) if values
                         else np.zeros((0, feature_dim), np.float32)))
