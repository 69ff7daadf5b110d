"""A tiny collection with known problems for the audit tests (imported, not collected).

Clusters per class in 32-d with enough noise that distinct images stay below the duplicate
threshold, plus: a few train labels flipped, copies of train images placed in test (one of them
relabelled), and a few vectors far from every class.  Only the Parquet shards are written:
that is all the audit reads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np

from beam_jobs.runs.read import LABELS, MANIFEST, RUNS_DIR, SUCCESS
from schemas import SCHEMA_VERSION, record
from tests.helpers import fake_runs as fx

CLASSES = ("cat", "dog", "fish")
DIM = 32
PER_CLASS = {"train": 40, "validation": 10, "test": 15}


@dataclasses.dataclass
class Planted:
    flipped: list[str]  # uris whose label was changed
    true_label: dict[str, str]
    copies: list[tuple[str, str]]  # (original in train, copy in test)
    outliers: list[str]


def _row(uri: str, label: str, split: str, values: np.ndarray, fingerprint: str) -> dict:
    return {record.IMAGE_ID: hashlib.sha256(uri.encode()).hexdigest(), record.URI: uri,
            record.LABEL: label, record.LABEL_ID: CLASSES.index(label), record.SPLIT: split,
            record.TRANSFER_VALUES: values.astype(np.float32), record.BACKBONE: fingerprint}


def _rows(run_id: str, per_class, fingerprint: str, classes, seed: int):
    rng = np.random.default_rng(seed)
    means = fx.class_means(CLASSES, DIM)
    return [_row(f"fake://{run_id}/{split}/{label}/{i}.png", label, split,
                 means[label] + rng.normal(0.0, 2.0, DIM), fingerprint)
            for split, n in per_class.items() for label in classes for i in range(n)]


def plant_problems(rows: list[dict], seed: int = 7) -> Planted:
    rng = np.random.default_rng(seed)
    train = [r for r in rows if r[record.SPLIT] == "train"]
    picked = rng.choice(len(train), 9, replace=False)
    planted = Planted([], {}, [], [])
    for n in picked[:6]:  # flipped labels
        row = train[n]
        planted.true_label[row[record.URI]] = row[record.LABEL]
        row[record.LABEL] = CLASSES[(CLASSES.index(row[record.LABEL]) + 1) % len(CLASSES)]
        planted.flipped.append(row[record.URI])
    for k, n in enumerate(picked[6:]):  # re-encoded copies leaking into test
        original = train[n]
        label = original[record.LABEL] if k else planted.true_label.get(original[record.URI],
                                                                        original[record.LABEL])
        label = CLASSES[(CLASSES.index(label) + 1) % len(CLASSES)] if k == 0 else label
        copy = _row(f"{original[record.URI]}.jpg", label, "test",
                    original[record.TRANSFER_VALUES] + rng.normal(0, 0.01, DIM),
                    original[record.BACKBONE])
        rows.append(copy)
        planted.copies.append((original[record.URI], copy[record.URI]))
    for k in range(2):  # far from every class
        far = _row(f"fake://blank/{k}.png", CLASSES[k], "train",
                   rng.normal(0.0, 1.0, DIM) * 40.0, rows[0][record.BACKBONE])
        rows.append(far)
        planted.outliers.append(far[record.URI])
    return planted


def write_parquet_run(out_dir: str, run_id: str, rows: list[dict], fingerprint: str) -> str:
    """A committed run folder holding the rows as Parquet shards (one per split)."""
    run_dir = os.path.join(out_dir, RUNS_DIR, run_id)
    os.makedirs(run_dir, exist_ok=True)
    by_split = {split: [record.to_arrow_row(r) for r in rows if r[record.SPLIT] == split]
                for split in record.SPLITS}
    fx._write_parquet(run_dir, "train", [by_split["train"]], DIM)
    for split in ("validation", "test"):
        fx._write_parquet(run_dir, split, [by_split[split]], DIM)
    labels = sorted({r[record.LABEL] for r in rows})
    with open(os.path.join(run_dir, LABELS), "w") as f:
        f.write("".join(f"{label}\n" for label in labels))
    counts: dict[str, dict[str, int]] = {}
    for r in rows:
        per = counts.setdefault(r[record.SPLIT], {})
        per[r[record.LABEL]] = per.get(r[record.LABEL], 0) + 1
    manifest = {"run_id": run_id, "schema_version": SCHEMA_VERSION, "labels": labels,
                "backbone": {"name": "fake", "fingerprint": fingerprint, "image_size": 16,
                             "feature_dim": DIM, "handle": "fake"}, "counts": counts}
    with open(os.path.join(run_dir, MANIFEST), "w") as f:
        json.dump(manifest, f)
    open(os.path.join(run_dir, SUCCESS), "w").close()
    return run_dir


def write_collection(out_dir: str, *, run_id: str = "20240101T000000-a", per_class=None,
                     classes=CLASSES, fingerprint: str = "fake@1/16px/32d", seed: int = 0,
                     problems: bool = True) -> Planted | None:
    rows = _rows(run_id, PER_CLASS if per_class is None else per_class, fingerprint, classes,
                 seed)
    planted = plant_problems(rows) if problems else None
    write_parquet_run(out_dir, run_id, rows, fingerprint)
    return planted
