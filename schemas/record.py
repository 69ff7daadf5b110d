"""The transfer-value record: one table of fields, every on-disk format derived from it.

Keeping the table as the single source means the TFRecord parser, the Parquet writer and the
tensorflow-metadata schema cannot disagree about a name, a type or a shape.  Field names are
exposed as module constants so no other module spells them as string literals.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

SCHEMA_VERSION = 2  # 2: the `view` field (cached augmented views); v1 records read as view 0
READABLE_SCHEMA_VERSIONS = (1, SCHEMA_VERSION)  # what readers accept: v1 lacks only `view`


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    kind: str  # "bytes" | "int64" | "float32_vector"
    description: str
    default: Any = None  # what a record (or a shard written before the field existed) lacking it holds


IMAGE_ID = "image_id"
URI = "uri"
LABEL = "label"
LABEL_ID = "label_id"
SPLIT = "split"
TRANSFER_VALUES = "transfer_values"
BACKBONE = "backbone"
VIEW = "view"
ORIGINAL_VIEW = 0  # the image itself; 1..K are its cached augmented views (train split only)
MIRROR_VIEW = -1  # the image mirrored left-right, for test-time augmentation (every split)

FIELDS: tuple[Field, ...] = (
    Field(IMAGE_ID, "bytes", "SHA-256 hex of the encoded image bytes; dedup and incremental key"),
    Field(URI, "bytes", "where the image came from (path, gs://..., file.tfrecord#17, idx:train#123)"),
    Field(LABEL, "bytes", "class name as given by the source"),
    Field(LABEL_ID, "int64", "index into the run's labels.txt (sorted, stable)"),
    Field(SPLIT, "bytes", "train / validation / test"),
    Field(TRANSFER_VALUES, "float32_vector", "the backbone's pooled features, length fixed per backbone"),
    Field(BACKBONE, "bytes", "backbone fingerprint: name, weights hash, input size, preprocessing"),
    Field(VIEW, "int64", "0: the image itself; 1..K: its cached augmented views (train only); "
          "-1: its left-right mirror, for test-time augmentation", default=ORIGINAL_VIEW),
)

SPLITS = ("train", "validation", "test")


def _check_dim(feature_dim: int) -> None:
    if feature_dim <= 0:
        raise ValueError(f"feature_dim must be positive, got {feature_dim}")


def tf_feature_spec(feature_dim: int) -> dict[str, Any]:
    """Feature spec for `tf.io.parse_example`; strings stay tf.string, the vector is fixed-length."""
    import tensorflow as tf

    _check_dim(feature_dim)
    spec: dict[str, Any] = {}
    for field in FIELDS:
        if field.kind == "bytes":
            spec[field.name] = tf.io.FixedLenFeature([], tf.string)
        elif field.kind == "int64":
            spec[field.name] = tf.io.FixedLenFeature([], tf.int64, default_value=field.default)
        else:
            spec[field.name] = tf.io.FixedLenFeature([feature_dim], tf.float32)
    return spec


def value_of(record: Mapping[str, Any], field: Field) -> Any:
    """A record's value of `field`; the field's default when the record predates it."""
    if field.default is not None:
        return record.get(field.name, field.default)
    return record[field.name]


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def to_tf_example(record: Mapping[str, Any]) -> bytes:
    """Serialize a record (a mapping with every field) to `tf.train.Example` bytes."""
    from tensorflow.core.example import example_pb2, feature_pb2

    features = {}
    for field in FIELDS:
        value = value_of(record, field)
        if field.kind == "bytes":
            features[field.name] = feature_pb2.Feature(
                bytes_list=feature_pb2.BytesList(value=[_as_bytes(value)]))
        elif field.kind == "int64":
            features[field.name] = feature_pb2.Feature(
                int64_list=feature_pb2.Int64List(value=[int(value)]))
        else:
            features[field.name] = feature_pb2.Feature(
                float_list=feature_pb2.FloatList(value=np.asarray(value, np.float32).ravel()))
    example = example_pb2.Example(features=feature_pb2.Features(feature=features))
    return example.SerializeToString()


def parse_tf_example(serialized: bytes) -> dict[str, Any]:
    """Inverse of `to_tf_example` without a TF graph: strings decoded, vector as float32 array."""
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example.FromString(serialized)
    out: dict[str, Any] = {}
    for field in FIELDS:
        if field.default is not None and field.name not in example.features.feature:
            out[field.name] = field.default
            continue
        feature = example.features.feature[field.name]
        if field.kind == "bytes":
            out[field.name] = feature.bytes_list.value[0].decode("utf-8")
        elif field.kind == "int64":
            out[field.name] = int(feature.int64_list.value[0])
        else:
            out[field.name] = np.asarray(feature.float_list.value, np.float32)
    return out


def arrow_schema(feature_dim: int):
    """Arrow schema for the Parquet shards; the vector is a fixed-size list so readers know D."""
    import pyarrow as pa

    _check_dim(feature_dim)
    types = {
        "bytes": pa.string(),
        "int64": pa.int64(),
        "float32_vector": pa.list_(pa.float32(), feature_dim),
    }
    metadata = {b"schema_version": str(SCHEMA_VERSION).encode()}
    return pa.schema(
        [pa.field(f.name, types[f.kind], nullable=False, metadata={b"description": f.description.encode()})
         for f in FIELDS],
        metadata=metadata,
    )


def to_arrow_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """Plain Python values in the Arrow schema's order, as Beam's Parquet sink expects."""
    row: dict[str, Any] = {}
    for field in FIELDS:
        value = value_of(record, field)
        if field.kind == "bytes":
            row[field.name] = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        elif field.kind == "int64":
            row[field.name] = int(value)
        else:
            row[field.name] = np.asarray(value, np.float32).ravel().tolist()
    return row


def to_record_batch(records: Sequence[Mapping[str, Any]], feature_dim: int):
    """Records → one `pa.RecordBatch` in `arrow_schema`: the vectors stacked, not listed.

    The extract job writes and analyses whole batches (Parquet row groups, tf.Examples
    encoded in C++, TFT's RecordBatch input): per-record Python conversion of 1,280 floats
    cost more than the backbone's own time per image.
    """
    import pyarrow as pa

    schema = arrow_schema(feature_dim)
    vectors = np.stack([np.asarray(r[TRANSFER_VALUES], np.float32).ravel() for r in records])
    if vectors.shape[1] != feature_dim:
        raise ValueError(f"transfer values have {vectors.shape[1]} dims, the schema {feature_dim}")
    columns = []
    for field in FIELDS:
        if field.kind == "bytes":
            columns.append(pa.array([_as_text(value_of(r, field)) for r in records], pa.string()))
        elif field.kind == "int64":
            columns.append(pa.array([int(value_of(r, field)) for r in records], pa.int64()))
        else:
            columns.append(pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()),
                                                             feature_dim))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _as_text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def as_example_lists(batch, names: Sequence[str] | None = None):
    """A record batch with every column as a list column (one list per row), the layout of a
    tf.Example that tfx_bsl's encoder and TFT's RecordBatch input expect."""
    import pyarrow as pa

    arrays, fields = [], []
    for field in batch.schema:
        if names is not None and field.name not in names:
            continue
        column = batch.column(field.name)
        if pa.types.is_fixed_size_list(field.type):
            size = field.type.list_size
            offsets = pa.array(np.arange(0, (len(column) + 1) * size, size, dtype=np.int32))
            values = column.flatten()
        else:
            offsets = pa.array(np.arange(len(column) + 1, dtype=np.int32))
            values = column.cast(pa.binary()) if pa.types.is_string(field.type) else column
        arrays.append(pa.ListArray.from_arrays(offsets, values))
        fields.append(pa.field(field.name, arrays[-1].type))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def to_tf_examples(batch) -> list[bytes]:
    """A record batch (`to_record_batch`) → serialized tf.Examples, encoded by tfx_bsl in C++;
    the same features as `to_tf_example` gives each record."""
    from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

    return RecordBatchToExamplesEncoder().encode(as_example_lists(batch))


def from_arrow_row(row: Mapping[str, Any]) -> dict[str, Any]:
    out = {field.name: field.default for field in FIELDS if field.default is not None}
    out.update(row)
    out[TRANSFER_VALUES] = np.asarray(row[TRANSFER_VALUES], np.float32)
    return out


def metadata_schema(feature_dim: int):
    """tensorflow-metadata `Schema` proto, as TFX components (TFDV, TFT) consume it."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    _check_dim(feature_dim)
    schema = schema_pb2.Schema()
    for field in FIELDS:
        feature = schema.feature.add()
        feature.name = field.name
        feature.annotation.comment.append(field.description)
        feature.presence.min_fraction = 1.0
        feature.presence.min_count = 1
        if field.kind == "bytes":
            feature.type = schema_pb2.BYTES
            feature.shape.dim.add().size = 1
        elif field.kind == "int64":
            feature.type = schema_pb2.INT
            feature.shape.dim.add().size = 1
        else:
            feature.type = schema_pb2.FLOAT
            feature.shape.dim.add().size = feature_dim
    return schema
