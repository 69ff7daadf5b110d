"""Tiny committed runs and a tiny backbone for the trainer tests (imported, not collected).

A fake run has the exact on-disk shape of an extract job's output (GZIP TFRecord shards of
`schemas.to_tf_example`, labels.txt, manifest.json, _SUCCESS last) with transfer values drawn
around class-dependent means, so a head can separate the classes in a few epochs.  The
backbone itself is the shared `tiny_backbone` fixture of conftest.py.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import tensorflow as tf

from beam_jobs import backbones
from beam_jobs.runs.read import LABELS, MANIFEST, PARQUET_DIR, RUNS_DIR, SUCCESS
from schemas import SCHEMA_VERSION, record, to_tf_example
from tests.helpers.images import png_bytes

CLASSES = ("cat", "dog", "fish")
FEATURE_DIM = 8
IMAGE_SIZE = 16
PER_CLASS = {"train": 40, "validation": 15, "test": 15}


def class_means(classes=CLASSES, feature_dim: int = FEATURE_DIM, spread: float = 3.0):
    """One fixed mean per class *name*, so two runs of the same classes agree."""
    return {label: np.random.default_rng(int(hashlib.sha256(label.encode()).hexdigest()[:8], 16))
            .normal(0.0, spread, feature_dim).astype(np.float32) for label in classes}


def _views(split: str, augment_views: int, mirror: bool) -> list[int]:
    """The views each image of `split` gets, as the extract job writes them."""
    augmented = list(range(1, augment_views + 1)) if split == "train" else []
    return [record.ORIGINAL_VIEW] + augmented + ([record.MIRROR_VIEW] if mirror else [])


def _write_split(run_dir: str, run_id: str, split: str, labels: list[str], per_split: int,
                 fingerprint: str, means, rng, noise: float, shards: int,
                 views: tuple[int, ...] = (record.ORIGINAL_VIEW,)) -> None:
    """TFRecord shards and, row for row in the same order, Parquet shards.  All view-0 records
    come first; view v of image n goes to shard (n + v) mod shards, so an image's views lie in
    different shards and far apart, as readers must expect."""
    paths = [os.path.join(run_dir, f"{split}-{s:05d}-of-{shards:05d}.tfrecord.gz")
             for s in range(shards)]
    writers = [tf.io.TFRecordWriter(path, options="GZIP") for path in paths]
    parquet_rows: list[list[dict]] = [[] for _ in range(shards)]
    rows = [(label, i) for label in labels for i in range(per_split)]
    for view in views:
        for n, (label, i) in enumerate(rows):
            uri = f"fake://{run_id}/{split}/{label}/{i}.png"
            row = {
                record.IMAGE_ID: hashlib.sha256(uri.encode()).hexdigest(),
                record.URI: uri,
                record.LABEL: label,
                record.LABEL_ID: labels.index(label),  # this run's own index, as extracted
                record.SPLIT: split,
                record.TRANSFER_VALUES: means[label] + rng.normal(0.0, noise, len(means[label])),
                record.BACKBONE: fingerprint,
                record.VIEW: view,
            }
            writers[(n + view) % shards].write(to_tf_example(row))
            parquet_rows[(n + view) % shards].append(record.to_arrow_row(row))
    for writer in writers:
        writer.close()
    _write_parquet(run_dir, split, parquet_rows, len(next(iter(means.values()))))


def _write_parquet(run_dir: str, split: str, shards: list[list[dict]], feature_dim: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from schemas import arrow_schema

    os.makedirs(os.path.join(run_dir, PARQUET_DIR), exist_ok=True)
    schema = arrow_schema(feature_dim)
    for s, rows in enumerate(shards):
        table = pa.Table.from_pylist(rows, schema=schema)
        pq.write_table(table, os.path.join(run_dir, PARQUET_DIR,
                                           f"{split}-{s:05d}-of-{len(shards):05d}.parquet"))


def write_run(out_dir: str, run_id: str, *, classes=CLASSES, per_class=None,
              feature_dim: int = FEATURE_DIM, fingerprint: str = "fake@1/16px/8d",
              handle: str = "fake", noise: float = 1.0, shards: int = 2, seed: int = 0,
              committed: bool = True, augment_views: int = 0, mirror: bool = False) -> str:
    """Write `<out_dir>/runs/<run_id>/` (`per_class`: examples per label for each split) and
    return its path; `committed=False` leaves out `_SUCCESS`, like an interrupted job.
    `augment_views` K > 0 adds views 1..K of every train image, `mirror` a view -1 of every
    image (each its own noisy draw around the class mean), with the manifest's `views` and
    `view_counts`; without either the run looks like one written before views existed."""
    per_class = dict(PER_CLASS if per_class is None else per_class)
    run_dir = os.path.join(out_dir, RUNS_DIR, run_id)
    os.makedirs(run_dir, exist_ok=True)
    labels = sorted(classes)
    means = class_means(labels, feature_dim)
    rng = np.random.default_rng(seed)
    for split in record.SPLITS:
        _write_split(run_dir, run_id, split, labels, per_class.get(split, 0), fingerprint,
                     means, rng, noise, shards, tuple(_views(split, augment_views, mirror)))
    with open(os.path.join(run_dir, LABELS), "w") as f:
        f.write("".join(f"{label}\n" for label in labels))
    manifest = {"run_id": run_id, "schema_version": SCHEMA_VERSION, "labels": labels,
                "backbone": {"name": "fake", "fingerprint": fingerprint,
                             "image_size": IMAGE_SIZE, "feature_dim": feature_dim,
                             "handle": handle},
                "counts": {split: {label: per_class.get(split, 0) for label in labels}
                           for split in record.SPLITS}}
    if augment_views or mirror:
        manifest["views"] = {"augment_views": augment_views, "mirror": mirror,
                             "policy": {"kind": "fake", "augment_views": augment_views}}
        manifest["view_counts"] = {
            split: {str(v): per_class.get(split, 0) * len(labels)
                    for v in _views(split, augment_views, mirror)} for split in record.SPLITS}
    with open(os.path.join(run_dir, MANIFEST), "w") as f:
        json.dump(manifest, f)
    if committed:
        open(os.path.join(run_dir, SUCCESS), "w").close()
    return run_dir


def write_servable_run(out_dir: str, backbone_dir: str, run_id: str = "20240101T000000-a",
                       **kwargs) -> str:
    """A run whose manifest names a real backbone SavedModel (the `tiny_backbone` fixture), so
    training can export a serving model; its fingerprint is what `backbones.load` reports."""
    fingerprint = backbones.load(backbone_dir).fingerprint
    return write_run(out_dir, run_id, fingerprint=fingerprint, handle=backbone_dir, **kwargs)


def random_png(seed: int, height: int = 23, width: int = 31) -> bytes:
    """A random RGB PNG made with PIL (odd size, so the serving resize really resizes)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return png_bytes(pixels)


def random_softmax_head(feature_dim: int, scale: float, seed: int = 5):
    """A softmax head over CLASSES with fixed random weights (normal, `scale`): decisive enough
    to predict without training, so export and serving tests need no fit."""
    from trainer.train.config import TrainConfig
    from trainer.train.heads import build_model

    head = build_model(TrainConfig(head="softmax", seed=seed), feature_dim, len(CLASSES))
    rng = np.random.default_rng(seed)
    head.set_weights([rng.normal(0.0, scale, w.shape).astype(np.float32)
                      for w in head.get_weights()])
    return head
