"""`--format=parquet`: the run's Parquet shards as a tf.data source, same rows as the TFRecords.

pyarrow reads each shard in record batches (columnar, no per-row Python); tf.data receives
whole batches and unbatches them, so the rest of the input pipeline (shuffle, batch, label
lookup, transform) is the one the TFRecord path uses.  Files are opened through Beam's
`FileSystems`, so `gs://` shards read like local ones.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from schemas import record

_READ_ROWS = 1024  # rows per pyarrow batch: large enough to amortise the Python hop
COLUMNS = (record.TRANSFER_VALUES, record.LABEL, record.URI)


def _batches(path: bytes, feature_dim: int):
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path.decode("utf-8"), compression_type="uncompressed") as f:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=_READ_ROWS, columns=list(COLUMNS)):
            values = batch.column(record.TRANSFER_VALUES).flatten().to_numpy()
            yield {record.TRANSFER_VALUES: values.astype(np.float32).reshape(-1, feature_dim),
                   record.LABEL: np.asarray(batch.column(record.LABEL).to_pylist(), object),
                   record.URI: np.asarray(batch.column(record.URI).to_pylist(), object)}


def parquet_rows(path: tf.Tensor, feature_dim: int) -> tf.data.Dataset:
    """One Parquet shard → a dataset of row dicts {transfer_values [D], label, uri}."""
    signature = {record.TRANSFER_VALUES: tf.TensorSpec([None, feature_dim], tf.float32),
                 record.LABEL: tf.TensorSpec([None], tf.string),
                 record.URI: tf.TensorSpec([None], tf.string)}
    return tf.data.Dataset.from_generator(_batches, output_signature=signature,
                                          args=(path, feature_dim)).unbatch()
