"""What "the same committed run" means when one job ran on Flink and the other on the
DirectRunner: the same rows (image_id, view, uri, split, label), transfer values within float
tolerance, the same dead letters with the same reasons, and the same manifest accounting."""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from schemas import record as schemas
from schemas.run import DEAD_LETTERS_DIR
from beam_jobs.runs import read as runs

# Manifest entries that describe the data, not the job (ids, times, options, versions differ).
ACCOUNTING = ("inputs", "accepted", "rejected", "counts", "view_counts", "dead_letters",
              "skipped_files", "labels", "already_extracted")


def rows(run: runs.Run) -> dict[tuple[str, int], dict]:
    """Every record of a run keyed by (image_id, view)."""
    keyed = {}
    for split in schemas.SPLITS:
        for raw in tf.data.TFRecordDataset(run.shards(split), compression_type="GZIP"):
            row = schemas.parse_tf_example(raw.numpy())
            keyed[(row[schemas.IMAGE_ID], row.get(schemas.VIEW, 0))] = row
    return keyed


def dead_letters(run: runs.Run) -> list[tuple[str, str, str]]:
    folder = os.path.join(run.path, DEAD_LETTERS_DIR)
    letters = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        with open(os.path.join(folder, name)) as f:
            letters += [json.loads(line) for line in f if line.strip()]
    return sorted((d["uri"], d["reason"], d["stage"]) for d in letters)


def transformed(run: runs.Run, values: np.ndarray, label: str) -> np.ndarray:
    """The run's TFT transform_fn (z-score fitted on its train split) applied to `values`."""
    import tensorflow_transform as tft

    output = tft.TFTransformOutput(run.path)
    features = {schemas.LABEL: tf.constant([label] * len(values)),
                schemas.TRANSFER_VALUES: tf.constant(values)}
    return output.transform_raw_features(features)[schemas.TRANSFER_VALUES].numpy()


def assert_same_run(flink: runs.Run, direct: runs.Run, atol: float = 1e-5) -> dict:
    """Assert the two runs are the same; return the figures compared (for reports)."""
    a, b = rows(flink), rows(direct)
    assert sorted(a) == sorted(b), "different (image_id, view) keys"
    fields = (schemas.URI, schemas.SPLIT, schemas.LABEL, schemas.LABEL_ID, schemas.BACKBONE)
    worst = 0.0
    for key, row in a.items():
        assert {f: row[f] for f in fields} == {f: b[key][f] for f in fields}, key
        diff = np.abs(np.asarray(row[schemas.TRANSFER_VALUES]) -
                      np.asarray(b[key][schemas.TRANSFER_VALUES]))
        worst = max(worst, float(diff.max()))
    assert worst <= atol, f"transfer values differ by {worst}"
    assert dead_letters(flink) == dead_letters(direct)
    ma, mb = flink.manifest, direct.manifest
    assert {k: ma.get(k) for k in ACCOUNTING} == {k: mb.get(k) for k in ACCOUNTING}
    values = np.stack([row[schemas.TRANSFER_VALUES] for row in a.values()])
    tft_diff = float(np.abs(transformed(flink, values, flink.labels[0]) -
                            transformed(direct, values, flink.labels[0])).max())
    assert tft_diff <= 1e-4, f"the TFT analyses differ by {tft_diff}"
    return {"rows": len(a), "dead_letters": len(dead_letters(flink)),
            "max_abs_diff": worst, "tft_max_abs_diff": tft_diff, "inputs": ma["inputs"]}
