"""`--format=parquet`: the run's Parquet shards as a tf.data source, same rows as the TFRecords.

pyarrow reads each shard in record batches (columnar, no per-row Python); tf.data receives
whole batches and unbatches them, so the rest of the input pipeline (shuffle, batch, label
lookup, transform, view sampling) is the one the TFRecord path uses.  Files are opened through
Beam's `FileSystems`, so `gs://` shards read like local ones.  Shards written before the `view`
field existed lack its column: their rows are view 0, the field's default.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from schemas import record

_READ_ROWS = 1024  # rows per pyarrow batch: large enough to amortise the Python hop
TEXT_COLUMNS = (record.LABEL, record.URI, record.IMAGE_ID)
COLUMNS = (record.TRANSFER_VALUES,) + TEXT_COLUMNS + (record.VIEW,)
_VIEW_DEFAULT = next(field.default for field in record.FIELDS if field.name == record.VIEW)


def _batches(path: bytes, feature_dim: int):
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path.decode("utf-8"), compression_type="uncompressed") as f:
        shard = pq.ParquetFile(f)
        present = [name for name in COLUMNS if name in shard.schema_arrow.names]
        for batch in shard.iter_batches(batch_size=_READ_ROWS, columns=present):
            values = batch.column(record.TRANSFER_VALUES).flatten().to_numpy()
            rows = {record.TRANSFER_VALUES: values.astype(np.float32).reshape(-1, feature_dim)}
            rows.update({name: np.asarray(batch.column(name).to_pylist(), object)
                         for name in TEXT_COLUMNS})
            rows[record.VIEW] = (batch.column(record.VIEW).to_numpy().astype(np.int64)
                                 if record.VIEW in present
                                 else np.full(batch.num_rows, _VIEW_DEFAULT, np.int64))
            yield rows


def parquet_rows(path: tf.Tensor, feature_dim: int) -> tf.data.Dataset:
    """One Parquet shard → a dataset of row dicts {transfer_values [D], label, uri, image_id,
    view}."""
    signature = {record.TRANSFER_VALUES: tf.TensorSpec([None, feature_dim], tf.float32),
                 **{name: tf.TensorSpec([None], tf.string) for name in TEXT_COLUMNS},
                 record.VIEW: tf.TensorSpec([None], tf.int64)}
    return tf.data.Dataset.from_generator(_batches, output_signature=signature,
                                          args=(path, feature_dim)).unbatch()
