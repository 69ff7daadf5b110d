"""`tf.train.Example` records holding encoded images (a TFRecord export from another team).

Each matched file is read whole (retried like any other read) and split into records here, so
every record gets a stable uri `file.tfrecord#17`.  Feature keys are configurable; by default
the common ones are tried in order.  A file whose name starts with `train`, `validation` (or
`val`, `dev`) or `test` carries that split, as in the usual `train-00000-of-00010` naming.
"""

from __future__ import annotations

import posixpath
import re
import struct
from typing import Iterator, Optional, Sequence

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes, FileMetadata
from apache_beam.metrics import Metrics

from beam_jobs.cli.errors import UserError
from beam_jobs.sources.base import KeepFirst, SourceConfig
from beam_jobs.sources.elements import NOT_AN_IMAGE, TRUNCATED, UNREADABLE, SourceImage
from beam_jobs.sources.reading import ReadFailure, matches, read_with_retry

IMAGE_KEYS = ("image/encoded", "image_raw", "image", "encoded")
LABEL_KEYS = ("image/class/text", "image/class/label", "label")
_SPLIT_PREFIX = re.compile(r"^(train|training|validation|val|valid|dev|test|testing)(?=[-_.])")
_SPLITS = {"train": "train", "training": "train", "validation": "validation",
           "val": "validation", "valid": "validation", "dev": "validation", "test": "test",
           "testing": "test"}


def split_of(path: str) -> Optional[str]:
    found = _SPLIT_PREFIX.match(posixpath.basename(path).lower())
    return _SPLITS[found.group(1)] if found else None


def iter_records(data: bytes) -> Iterator[bytes]:
    """TFRecord framing: u64 length, u32 crc, payload, u32 crc. Raises EOFError if cut short."""
    offset = 0
    while offset < len(data):
        if offset + 12 > len(data):
            raise EOFError(f"record header cut short at byte {offset}")
        (length,) = struct.unpack_from("<Q", data, offset)
        start, end = offset + 12, offset + 12 + length
        if end + 4 > len(data):
            raise EOFError(f"record of {length} bytes cut short at byte {offset}")
        yield data[start:end]
        offset = end + 4


def _feature_value(features, keys: Sequence[str]):
    """The first of `keys` present with a value: bytes, or int for an int64 feature."""
    for key in keys:
        if key in features.feature:
            feature = features.feature[key]
            if feature.bytes_list.value:
                return key, feature.bytes_list.value[0]
            if feature.int64_list.value:
                return key, int(feature.int64_list.value[0])
    return None, None


class _ExplodeFile(beam.DoFn):
    def __init__(self, config: SourceConfig):
        self._image_keys = config.tfrecord_image_keys or IMAGE_KEYS
        self._label_keys = config.tfrecord_label_keys or LABEL_KEYS
        self._label_names = config.label_names
        self._read = Metrics.counter("extract", "images_read")

    def process(self, metadata: FileMetadata) -> Iterator[SourceImage]:
        path = metadata.path
        try:
            data = read_with_retry(path, compression=CompressionTypes.UNCOMPRESSED)
            if data[:2] == b"\x1f\x8b":  # GZIP, whatever the file is called
                import gzip

                data = gzip.decompress(data)
        except (ReadFailure, OSError, EOFError) as err:
            self._read.inc()
            yield SourceImage.unusable(path, UNREADABLE, f"TFRecord file: {err}")
            return
        split, index = split_of(path), 0
        try:
            for index, payload in enumerate(iter_records(data)):
                self._read.inc()
                yield self._to_image(f"{path}#{index}", payload, split)
        except EOFError as err:
            self._read.inc()
            yield SourceImage.unusable(f"{path}#{index + 1}", TRUNCATED, str(err))

    def _to_image(self, uri: str, payload: bytes, split: Optional[str]) -> SourceImage:
        from tensorflow.core.example import example_pb2

        try:
            features = example_pb2.Example.FromString(payload).features
        except Exception as err:  # noqa: BLE001 - protobuf's DecodeError and friends
            return SourceImage.unusable(uri, UNREADABLE, f"not a tf.train.Example: {err}")
        _, encoded = _feature_value(features, self._image_keys)
        if not isinstance(encoded, bytes):
            return SourceImage.unusable(uri, NOT_AN_IMAGE,
                                        f"no image bytes under {list(self._image_keys)}")
        _, label = _feature_value(features, self._label_keys)
        if label is None:
            return SourceImage.unusable(uri, UNREADABLE, f"no label under {list(self._label_keys)}")
        return SourceImage(uri=uri, label=self._label(label), encoded=encoded, source_split=split)

    def _label(self, value) -> str:
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        if self._label_names is not None and 0 <= value < len(self._label_names):
            return self._label_names[value]
        return str(value)


class ReadTFRecord(beam.PTransform):
    def __init__(self, pattern: str, config: SourceConfig = SourceConfig()):
        super().__init__()
        self._pattern = pattern
        self._config = config

    def expand(self, pbegin):
        if not matches(self._pattern):
            raise UserError(f"No TFRecord file matches {self._pattern}.")
        return (pbegin
                | "Match" >> fileio.MatchFiles(self._pattern)
                | "SpreadFiles" >> beam.Reshuffle()
                | "Explode" >> beam.ParDo(_ExplodeFile(self._config))
                | "Limit" >> KeepFirst(self._config.limit)
                | "Spread" >> beam.Reshuffle())

