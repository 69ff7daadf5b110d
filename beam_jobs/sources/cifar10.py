"""CIFAR-10, python version: `data_batch_1..5` (train), `test_batch` (test), `batches.meta`.

DIR may be the `cifar-10-batches-py` folder itself or the folder holding it.  The batches are
pickles; they are loaded with an unpickler that admits only what numpy arrays need, so a
crafted file cannot run code on the workers.
"""

from __future__ import annotations

import io
import pickle
import re
from typing import Any, Iterator

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_jobs.cli.errors import UserError
from beam_jobs.sources.elements import SourceImage
from beam_jobs.sources.reading import matches, read_with_retry

_BATCH = re.compile(r"^(data_batch_\d+|test_batch)$")
_SUBFOLDER = "cifar-10-batches-py"
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
            ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name} in a CIFAR batch")
        return super().find_class(module, name)


def load_batch(data: bytes, name: str = "CIFAR batch") -> dict[str, Any]:
    """A CIFAR pickle (written by Python 2: byte-string keys) → dict with str keys."""
    try:
        raw = _ArraysOnly(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise UserError(f"{name} is not a CIFAR-10 python batch: {err}.") from None
    if not isinstance(raw, dict):
        raise UserError(f"{name} is not a CIFAR-10 python batch: it holds a "
                        f"{type(raw).__name__}.")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}


def find_batches(directory: str) -> tuple[dict[str, str], str | None]:
    """({batch name: path}, path of batches.meta or None), looking in DIR and DIR/cifar-10…"""
    for folder in (directory, FileSystems.join(directory, _SUBFOLDER)):
        found = {}
        if matches(FileSystems.join(folder, "*")):
            for meta in FileSystems.match([FileSystems.join(folder, "*")])[0].metadata_list:
                name = meta.path.rstrip("/").rsplit("/", 1)[-1]
                if _BATCH.match(name):
                    found[name] = meta.path
        if found:
            meta_path = FileSystems.join(folder, "batches.meta")
            return found, meta_path if matches(meta_path) else None
    raise UserError(f"No CIFAR-10 batches (data_batch_*, test_batch) found in {directory}.")


def class_names(meta_path: str | None) -> list[str] | None:
    if meta_path is None:
        return None
    names = load_batch(read_with_retry(meta_path), meta_path).get("label_names")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names] if names else None


class _ExplodeBatch(beam.DoFn):
    """One batch file → one SourceImage per row, pixels uint8 [32, 32, 3]."""

    def __init__(self, limit, names: list[str] | None):
        self._limit = limit
        self._names = names
        self._read = Metrics.counter("extract", "images_read")

    def process(self, batch: tuple[str, str]) -> Iterator[SourceImage]:
        name, path = batch
        content = load_batch(read_with_retry(path), path)
        data, labels = np.asarray(content["data"], np.uint8), content["labels"]
        if len(data) != len(labels) or data.shape[1] != 3 * 32 * 32:
            raise UserError(f"{path} is not a CIFAR-10 batch: data {data.shape}, "
                            f"{len(labels)} labels.")
        split = "test" if name == "test_batch" else "train"
        limit = self._limit.get(name, self._limit.get(split)) if isinstance(
            self._limit, dict) else self._limit
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # stored channel-first
        for index in range(len(images) if limit is None else min(limit, len(images))):
            self._read.inc()
            label = int(labels[index])
            yield SourceImage(uri=f"cifar10:{name}#{index}",
                              label=self._names[label] if self._names else str(label),
                              pixels=np.ascontiguousarray(images[index]), source_split=split)


class ReadCifar10(beam.PTransform):
    def __init__(self, directory: str, limit=None):
        super().__init__()
        self._directory = directory.rstrip("/")
        self._limit = limit

    def expand(self, pbegin):
        batches, meta = find_batches(self._directory)
        return (pbegin
                | "ListBatches" >> beam.Create(sorted(batches.items()))
                | "Spread" >> beam.Reshuffle()  # the file names: a shuffle of the images
                # themselves would be held whole in memory by the DirectRunner
                | "Explode" >> beam.ParDo(_ExplodeBatch(self._limit, class_names(meta))))
