"""Fashion-MNIST runs for benchmarks/audit_quality.py: extraction, planted copies, noisy labels.

- `extract(cache, train, test)`: one committed run of Fashion-MNIST (cached: skipped when the
  folder already holds one).
- `extract_copies(...)`: near duplicates across splits, extracted as a second run into the same
  output folder: JPEG re-encodes (quality 75) of test images placed in train, and one-pixel
  upscales (28 → 29 px, PNG) of train images placed in test.  Returns (copy uri, original uri).
- `noisy_copy(...)`: a copy of a run with a seeded share of train/validation labels flipped to
  another class, in both the TFRecord and the Parquet shards, so tv-train and tv-audit see it.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np

ROOT = os.path.join(os.path.dirname(__file__), "..")
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
LABELS = os.path.join(ROOT, "examples", "fashion_mnist_labels.txt")
TV_EXTRACT = [sys.executable, "-m", "beam_jobs.extract"]


def committed(output: str) -> list[str]:
    return sorted(os.path.dirname(p) for p in glob.glob(os.path.join(output, "runs", "*",
                                                                     "_SUCCESS")))


def extract(cache: str, train: int, test: int) -> str:
    output = os.path.join(cache, f"fm{train}-{test}")
    if not committed(output):
        subprocess.run(TV_EXTRACT + [f"--source=idx:{FASHION_MNIST}", f"--output={output}",
                                     f"--label_names={LABELS}",
                                     f"--limit=train={train},test={test}"], check=True)
    return output


def _rows(run_dir: str, columns=("uri", "label", "split")) -> dict[str, list]:
    import pyarrow.parquet as pq

    table = pq.read_table(os.path.join(run_dir, "parquet"), columns=list(columns))
    return table.to_pydict()


def _idx_images(part: str) -> np.ndarray:
    from beam_jobs.sources.idx import find_parts, read_bytes, read_idx

    return read_idx(read_bytes(find_parts(FASHION_MNIST)[part][0]))


def extract_copies(output: str, per_kind: int, seed: int = 0) -> list[tuple[str, str]]:
    """Plant `per_kind` copies of each kind; cached in `<output>/copies/pairs.json`."""
    from PIL import Image

    folder = os.path.join(output, "..", os.path.basename(output) + "-copies")
    pairs_file = os.path.join(folder, "pairs.json")
    if os.path.exists(pairs_file) and len(committed(output)) > 1:
        with open(pairs_file) as f:
            return [tuple(p) for p in json.load(f)]
    rows = _rows(committed(output)[0])
    rng = np.random.default_rng(seed)
    by_split = {s: [i for i, x in enumerate(rows["split"]) if x == s] for s in ("train", "test")}
    os.makedirs(folder, exist_ok=True)
    pairs, manifest = [], []
    for kind, source, target in (("jpeg", "test", "train"), ("resized", "train", "test")):
        for i in rng.choice(by_split[source], per_kind, replace=False):
            uri = rows["uri"][i]
            part, row = uri[len("idx:"):].split("#")
            pixels = _idx_images(part)[int(row)]
            image = Image.fromarray(pixels)
            buffer = io.BytesIO()
            if kind == "jpeg":
                image.save(buffer, format="JPEG", quality=75)
            else:
                image.resize((29, 29), Image.BILINEAR).save(buffer, format="PNG")
            path = os.path.abspath(os.path.join(folder, f"{kind}-{part}-{row}."
                                                f"{'jpg' if kind == 'jpeg' else 'png'}"))
            with open(path, "wb") as f:
                f.write(buffer.getvalue())
            manifest.append((path, rows["label"][i], target))
            pairs.append((path, uri))
    with open(os.path.join(folder, "manifest.csv"), "w", newline="") as f:
        csv.writer(f).writerows([("uri", "label", "split"), *manifest])
    subprocess.run(TV_EXTRACT + [f"--source=manifest:{os.path.join(folder, 'manifest.csv')}",
                                 f"--output={output}"], check=True)
    with open(pairs_file, "w") as f:
        json.dump(pairs, f)
    return pairs


def _relabel_tfrecords(run_dir: str, new_label: dict[str, str], labels: list[str]) -> None:
    import tensorflow as tf

    for path in glob.glob(os.path.join(run_dir, "*.tfrecord.gz")):
        records = []
        for serialized in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            example = tf.train.Example.FromString(serialized.numpy())
            uri = example.features.feature["uri"].bytes_list.value[0].decode()
            if uri in new_label:
                example.features.feature["label"].bytes_list.value[0] = new_label[uri].encode()
                example.features.feature["label_id"].int64_list.value[0] = labels.index(
                    new_label[uri])
            records.append(example.SerializeToString())
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for serialized in records:
                writer.write(serialized)


def _relabel_parquet(run_dir: str, new_label: dict[str, str], labels: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in glob.glob(os.path.join(run_dir, "parquet", "*.parquet")):
        table = pq.read_table(path)
        uris = table.column("uri").to_pylist()
        label = [new_label.get(u, old) for u, old in zip(uris, table.column("label").to_pylist())]
        table = table.set_column(table.schema.get_field_index("label"), "label",
                                 pa.array(label, table.schema.field("label").type))
        ids = pa.array([labels.index(x) for x in label], table.schema.field("label_id").type)
        table = table.set_column(table.schema.get_field_index("label_id"), "label_id", ids)
        pq.write_table(table, path)


def noisy_copy(run_dir: str, target: str, share: float, seed: int) -> dict[str, str]:
    """Copy the run to `<target>/runs/<id>` with `share` of train+validation labels flipped;
    returns {uri: true label} of the flipped ones (cached beside the copy)."""
    truth_file = os.path.join(target, "flipped.json")
    if os.path.exists(truth_file):
        with open(truth_file) as f:
            return json.load(f)
    rows = _rows(run_dir)
    labels = sorted(set(rows["label"]))
    candidates = [i for i, s in enumerate(rows["split"]) if s in ("train", "validation")]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(candidates, int(round(share * len(candidates))), replace=False)
    new_label, truth = {}, {}
    for i in chosen:
        old = rows["label"][i]
        others = [x for x in labels if x != old]
        new_label[rows["uri"][i]] = others[rng.integers(len(others))]
        truth[rows["uri"][i]] = old
    copy_dir = os.path.join(target, "runs", os.path.basename(run_dir))
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(run_dir, copy_dir)
    _relabel_tfrecords(copy_dir, new_label, labels)
    _relabel_parquet(copy_dir, new_label, labels)
    with open(truth_file, "w") as f:
        json.dump(truth, f)
    return truth
