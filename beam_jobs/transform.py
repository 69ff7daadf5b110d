"""The run's tensorflow-transform analysis: label vocabulary and z-score of the transfer values.

The analysis runs inside the extract pipeline over the train split only (validation and test
must not leak into the statistics) and writes `<run>/transform_fn/` + `transformed_metadata/`
with `tft_beam.WriteTransformFn` before the run is committed.  The trainer applies the stored
graph through `tft.TFTransformOutput` and the serving model embeds the very same graph, so
training and serving cannot disagree on the normalisation.

The z-score is elementwise (one mean and standard deviation per dimension of the vector).
The label vocabulary is TFT's own (most frequent first) and is stored as an artefact; models
still map labels to ids through the sorted `labels.txt` union (see trainer.data), because a
union of runs cannot share one run's frequency order.
"""

from __future__ import annotations

import apache_beam as beam

from schemas import record

LABEL_VOCABULARY = "label"  # <run>/transform_fn/assets/label
LABEL_INDEX = "label_index"  # transformed feature: index into that vocabulary, -1 if unknown


def raw_feature_spec(feature_dim: int) -> dict:
    """The raw features the transform reads: the label name and the transfer-value vector."""
    import tensorflow as tf

    return {record.LABEL: tf.io.FixedLenFeature([], tf.string),
            record.TRANSFER_VALUES: tf.io.FixedLenFeature([feature_dim], tf.float32)}


def preprocessing_fn(inputs: dict) -> dict:
    """z-scored transfer values (per dimension) and the label's vocabulary index."""
    import tensorflow_transform as tft

    return {
        record.TRANSFER_VALUES: tft.scale_to_z_score(inputs[record.TRANSFER_VALUES],
                                                     elementwise=True),
        LABEL_INDEX: tft.compute_and_apply_vocabulary(inputs[record.LABEL],
                                                      vocab_filename=LABEL_VOCABULARY),
    }


def _raw_instance(row: dict) -> dict:
    return {record.LABEL: row[record.LABEL].encode("utf-8") if isinstance(row[record.LABEL], str)
            else row[record.LABEL],
            record.TRANSFER_VALUES: row[record.TRANSFER_VALUES]}


class AnalyzeAndWriteTransform(beam.PTransform):
    """Train-split records → `<run_dir>/transform_fn/` and `<run_dir>/transformed_metadata/`.

    `temp_dir` is TFT's scratch space (it stages the analysed graph there); the caller picks a
    place that is cleaned up with the job (the pipeline's --temp_location or a local folder).
    """

    def __init__(self, run_dir: str, feature_dim: int, temp_dir: str):
        super().__init__()
        self._run_dir = run_dir
        self._feature_dim = feature_dim
        self._temp_dir = temp_dir

    def expand(self, train_records):
        import tensorflow_transform.beam as tft_beam
        from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

        metadata = dataset_metadata.DatasetMetadata(
            schema_utils.schema_from_feature_spec(raw_feature_spec(self._feature_dim)))
        with tft_beam.Context(temp_dir=self._temp_dir):
            instances = train_records | "ToRawInstance" >> beam.Map(_raw_instance)
            transform_fn = ((instances, metadata)
                            | "Analyze" >> tft_beam.AnalyzeDataset(preprocessing_fn))
            return transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(self._run_dir)
