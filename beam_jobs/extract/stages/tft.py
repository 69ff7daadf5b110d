"""The run's tensorflow-transform analysis: label vocabulary and z-score of the transfer values.

The analysis runs inside the extract pipeline over the train split only (validation and test
must not leak into the statistics) and writes `<run>/transform_fn/` + `transformed_metadata/`
with `tft_beam.WriteTransformFn` before the run is committed.  Training applies the stored
graph through `tft.TFTransformOutput` and the serving model embeds the very same graph, so
training and serving cannot disagree on the normalisation.

The z-score is elementwise (one mean and standard deviation per dimension of the vector).
The label vocabulary is TFT's own (most frequent first) and is stored as an artefact; models
still map labels to ids through the sorted `labels.txt` union (training input does), because a
union of runs cannot share one run's frequency order.
"""

from __future__ import annotations

import apache_beam as beam

from schemas import record

LABEL_VOCABULARY = "label"  # <run>/transform_fn/assets/label
LABEL_INDEX = "label_index"  # transformed feature: index into that vocabulary, -1 if unknown


def preprocessing_fn(inputs: dict) -> dict:
    """z-scored transfer values (per dimension) and the label's vocabulary index."""
    import tensorflow_transform as tft

    return {
        record.TRANSFER_VALUES: tft.scale_to_z_score(inputs[record.TRANSFER_VALUES],
                                                     elementwise=True),
        LABEL_INDEX: tft.compute_and_apply_vocabulary(inputs[record.LABEL],
                                                      vocab_filename=LABEL_VOCABULARY),
    }


RAW_FEATURES = (record.LABEL, record.TRANSFER_VALUES)


def _raw_batch(batch):
    """A run's record batch → the raw features as list columns, TFT's RecordBatch input."""
    return record.as_example_lists(batch, RAW_FEATURES)


def tensor_adapter_config(feature_dim: int):
    """How TFT turns those list columns into tensors: a string scalar and a dense [D] vector."""
    import pyarrow as pa
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tfx_bsl.tfxio import tensor_adapter

    def dense(name: str, *dims: int) -> schema_pb2.TensorRepresentation:
        return schema_pb2.TensorRepresentation(dense_tensor=(
            schema_pb2.TensorRepresentation.DenseTensor(
                column_name=name, shape=schema_pb2.FixedShape(
                    dim=[schema_pb2.FixedShape.Dim(size=d) for d in dims]))))

    arrow_schema = pa.schema([pa.field(record.LABEL, pa.list_(pa.binary())),
                              pa.field(record.TRANSFER_VALUES, pa.list_(pa.float32()))])
    return tensor_adapter.TensorAdapterConfig(
        arrow_schema, {record.LABEL: dense(record.LABEL),
                       record.TRANSFER_VALUES: dense(record.TRANSFER_VALUES, feature_dim)})


class AnalyzeAndWriteTransform(beam.PTransform):
    """Train-split record batches → `<run_dir>/transform_fn/` and `transformed_metadata/`.

    Fed Arrow RecordBatches (TFT's native input) rather than instance dicts, which TFT would
    re-encode one record at a time.  `temp_dir` is TFT's scratch space (it stages the analysed
    graph there); the caller picks a place that is cleaned up with the job (the pipeline's
    --temp_location or a local folder).
    """

    def __init__(self, run_dir: str, feature_dim: int, temp_dir: str):
        super().__init__()
        self._run_dir = run_dir
        self._feature_dim = feature_dim
        self._temp_dir = temp_dir

    def expand(self, train_batches):
        import tensorflow_transform.beam as tft_beam

        with tft_beam.Context(temp_dir=self._temp_dir):
            raw = train_batches | "RawFeatures" >> beam.Map(_raw_batch)
            transform_fn = ((raw, tensor_adapter_config(self._feature_dim))
                            | "Analyze" >> tft_beam.AnalyzeDataset(preprocessing_fn))
            return transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(self._run_dir)
