"""MNIST-style IDX files (`train-images-idx3-ubyte[.gz]` + `train-labels-idx1-ubyte[.gz]`).

The file names carry the source's own split: `train` → train (validation is carved from it by
hash downstream), `t10k`/`test` → test.  Images are `idx3` [N, H, W] (greyscale) or `idx4`
[N, H, W, C] with C = 1 or 3; labels are any integers (any number of classes), named by
`--label_names` when given.
"""

from __future__ import annotations

import functools
import gzip
import re
import struct
from typing import Iterator, Optional

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_jobs.cli.errors import UserError
from beam_jobs.sources.elements import SourceImage
from beam_jobs.sources.reading import read_with_retry

_PARTS = {"train": "train", "t10k": "test", "test": "test"}
_IMAGES = re.compile(r"^(?P<part>[A-Za-z0-9]+)-images[.-]idx(?P<ndim>[34])-ubyte(\.gz)?$")
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(data: bytes) -> np.ndarray:
    """Parse one IDX payload (already decompressed) into an array of its declared shape."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise UserError("Not an IDX file: the magic number is wrong.")
    dtype, ndim = np.dtype(_DTYPES[data[2]]), data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise UserError(f"IDX file is truncated: declares {dims}, holds {body.size} values.")
    return body.reshape(dims)


def read_bytes(path: str) -> bytes:
    """The payload of one IDX file, gzipped or raw; transient read errors retried."""
    raw = read_with_retry(path)
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def find_parts(directory: str) -> dict[str, tuple[str, str]]:
    """{part: (images_path, labels_path)} for every IDX image file with a labels partner."""
    matches = FileSystems.match([FileSystems.join(directory, "*idx*-ubyte*")])[0].metadata_list
    paths = {m.path.rsplit("/", 1)[-1]: m.path for m in matches}
    parts = {}
    for name, path in sorted(paths.items()):
        found = _IMAGES.match(name)
        if not found:
            continue
        labels_name = name.replace("-images", "-labels").replace(
            f"idx{found.group('ndim')}", "idx1")
        if labels_name not in paths:
            raise UserError(f"{path} has no labels file {labels_name} beside it.")
        parts[found.group("part")] = (path, paths[labels_name])
    if not parts:
        raise UserError(f"No IDX image files (*-images-idx3-ubyte[.gz] or idx4) found in "
                        f"{directory}.")
    return parts


CHUNK_ROWS = 2_000  # rows per unit of work: enough to spread over workers, few to plan


@functools.lru_cache(maxsize=2)
def _load_part(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays of one part, parsed once per worker process for all its chunks."""
    images, labels = read_idx(read_bytes(images_path)), read_idx(read_bytes(labels_path))
    if len(images) != len(labels):
        raise UserError(f"{images_path} holds {len(images)} images, labels {len(labels)}.")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise UserError(f"{images_path} holds images of shape {images.shape[1:]}: expected "
                        f"[H, W] or [H, W, C] with C = 1 or 3.")
    return images, labels


class _PlanChunks(beam.DoFn):
    """One images/labels pair → row ranges (name, paths, start, stop), the limit applied.

    Ranges, not images, are what gets shuffled to spread the work: a shuffle of the images
    themselves would be held whole in memory by the DirectRunner.
    """

    def __init__(self, limit):
        self._limit = limit

    def process(self, part: tuple[str, str, str]) -> Iterator[tuple[str, str, str, int, int]]:
        name, images_path, labels_path = part
        rows = len(_load_part(images_path, labels_path)[1])
        split = _PARTS.get(name.lower())
        limit = self._limit
        if isinstance(limit, dict):  # keyed by file part (t10k) or by split (test)
            limit = limit.get(name, limit.get(split or ""))
        count = rows if limit is None else min(limit, rows)
        for start in range(0, count, CHUNK_ROWS):
            yield name, images_path, labels_path, start, min(start + CHUNK_ROWS, count)


class _ExplodeChunk(beam.DoFn):
    """One row range → one SourceImage per row, with the file's split."""

    def __init__(self, label_names: Optional[list[str]]):
        self._label_names = label_names
        self._read = Metrics.counter("extract", "images_read")

    def process(self, chunk: tuple[str, str, str, int, int]) -> Iterator[SourceImage]:
        name, images_path, labels_path, start, stop = chunk
        images, labels = _load_part(images_path, labels_path)
        split = _PARTS.get(name.lower())
        for index in range(start, stop):
            self._read.inc()
            yield SourceImage(uri=f"idx:{name}#{index}", label=self._label(int(labels[index])),
                              pixels=np.ascontiguousarray(images[index], dtype=np.uint8),
                              source_split=split)

    def _label(self, value: int) -> str:
        if self._label_names is None:
            return str(value)
        if not 0 <= value < len(self._label_names):
            raise UserError(f"Label {value} has no name in the {len(self._label_names)} given.")
        return self._label_names[value]


class ReadIdx(beam.PTransform):
    """MNIST-style IDX pairs → SourceImage (pixels), one per row, with the file's split."""

    def __init__(self, directory: str, limit=None, label_names: Optional[list[str]] = None):
        super().__init__()
        self._directory = directory
        self._limit = limit
        self._label_names = label_names

    def expand(self, pbegin):
        parts = [(name, img, lab) for name, (img, lab) in find_parts(self._directory).items()]
        return (pbegin
                | "ListParts" >> beam.Create(parts)
                | "Chunks" >> beam.ParDo(_PlanChunks(self._limit))
                | "Spread" >> beam.Reshuffle()
                | "Explode" >> beam.ParDo(_ExplodeChunk(self._label_names)))
