"""The record definition round-trips through every format derived from it."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

import schemas
from schemas import record

DIM = 5


def _record(i: int) -> dict:
    return {record.IMAGE_ID: f"{i:064x}", record.URI: f"gs://bucket/img-{i}.jpg",
            record.LABEL: f"class-{i % 2}", record.LABEL_ID: i % 2, record.SPLIT: "train",
            record.TRANSFER_VALUES: np.arange(DIM, dtype=np.float32) * (i + 0.5),
            record.BACKBONE: "tiny@1/16px/5d", record.VIEW: i % 3 - 1}


def _record_v1(i: int) -> dict:
    """A record as schema version 1 wrote it: no `view` field."""
    old = _record(i)
    del old[record.VIEW]
    return old


def _assert_same(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for name, value in want.items():
        if name == record.TRANSFER_VALUES:
            np.testing.assert_array_equal(np.asarray(got[name], np.float32), value)
        else:
            assert got[name] == value, name


def test_tfrecord_round_trip_through_parse_example(tmp_path):
    path = str(tmp_path / "x.tfrecord.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for i in range(3):
            writer.write(schemas.to_tf_example(_record(i)))
    batch = next(iter(tf.data.TFRecordDataset(path, compression_type="GZIP").batch(3).map(
        lambda x: tf.io.parse_example(x, schemas.tf_feature_spec(DIM)))))
    for i in range(3):
        got = {k: (v[i].numpy().decode() if v.dtype == tf.string else v[i].numpy())
               for k, v in batch.items()}
        got[record.LABEL_ID] = int(got[record.LABEL_ID])
        _assert_same(got, _record(i))


def test_records_without_a_view_read_as_the_original_image(tmp_path):
    path = str(tmp_path / "v1.tfrecord.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        writer.write(_without_view_feature(schemas.to_tf_example(_record_v1(4))))
    parsed = next(iter(tf.data.TFRecordDataset(path, compression_type="GZIP").batch(1).map(
        lambda x: tf.io.parse_example(x, schemas.tf_feature_spec(DIM)))))
    assert int(parsed[record.VIEW][0]) == record.ORIGINAL_VIEW
    python_parsed = schemas.parse_tf_example(_without_view_feature(
        schemas.to_tf_example(_record_v1(4))))
    assert python_parsed[record.VIEW] == record.ORIGINAL_VIEW
    assert schemas.from_arrow_row(record.to_arrow_row(_record_v1(4)))[record.VIEW] == 0


def _without_view_feature(serialized: bytes) -> bytes:
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example.FromString(serialized)
    del example.features.feature[record.VIEW]
    return example.SerializeToString()


def test_python_parser_inverts_to_tf_example():
    _assert_same(schemas.parse_tf_example(schemas.to_tf_example(_record(7))), _record(7))


def test_parquet_round_trip_keeps_fixed_size_vector(tmp_path):
    schema = schemas.arrow_schema(DIM)
    rows = [record.to_arrow_row(_record(i)) for i in range(4)]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "x.parquet")
    table = pq.read_table(tmp_path / "x.parquet")
    assert table.schema.field(record.TRANSFER_VALUES).type == pa.list_(pa.float32(), DIM)
    for i, row in enumerate(table.to_pylist()):
        _assert_same(schemas.from_arrow_row(row), _record(i))


def test_parquet_refuses_a_vector_of_the_wrong_length():
    bad = record.to_arrow_row(dict(_record(0), **{record.TRANSFER_VALUES: np.zeros(DIM + 1)}))
    with pytest.raises((pa.ArrowInvalid, ValueError)):
        pa.Table.from_pylist([bad], schema=schemas.arrow_schema(DIM))


def test_metadata_schema_names_every_field_with_its_shape():
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = schemas.metadata_schema(DIM)
    by_name = {f.name: f for f in schema.feature}
    assert list(by_name) == [f.name for f in schemas.FIELDS]
    assert by_name[record.TRANSFER_VALUES].type == schema_pb2.FLOAT
    assert by_name[record.TRANSFER_VALUES].shape.dim[0].size == DIM
    assert by_name[record.LABEL_ID].type == schema_pb2.INT


def test_batched_conversion_matches_the_per_record_one(tmp_path):
    """The extract job converts whole batches (C++ tf.Example encoding, stacked vectors); each
    example must parse to what the per-record path gives, and Parquet must keep the schema."""
    records = [_record(i) for i in range(5)]
    batch = record.to_record_batch(records, DIM)
    assert batch.schema.equals(schemas.arrow_schema(DIM))
    for serialized, want in zip(record.to_tf_examples(batch), records):
        _assert_same(schemas.parse_tf_example(serialized), want)
        _assert_same(schemas.parse_tf_example(serialized),
                     schemas.parse_tf_example(schemas.to_tf_example(want)))
    pq.write_table(pa.Table.from_batches([batch]), tmp_path / "b.parquet")
    for row, want in zip(pq.read_table(tmp_path / "b.parquet").to_pylist(), records):
        _assert_same(schemas.from_arrow_row(row), want)


def test_batched_conversion_refuses_a_vector_of_the_wrong_length():
    with pytest.raises(ValueError, match="dims"):
        record.to_record_batch([_record(0)], DIM + 1)
