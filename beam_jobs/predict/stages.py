"""The batch prediction graph's stages: decode → RunInference over the export → rows → sinks.

    p | ReadImages | ToModelInputs | RunInference(ServingModelHandler) | ToPredictionRows
      | WritePredictions (Parquet + CSV)      dead letters | WriteDeadLetters    | WriteTally

Decoding is the extract job's own (its `DecodeImages` stage, or `predict_model.model_input`
for older exports), so a batch prediction sees the pixels the training features came from; the
model is loaded once per worker by RunInference, never pickled into the graph.  Rows carry the
export's `ood_score` and `in_distribution` (empty for an export without them), and the tally
counts the rows flagged out of distribution.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Iterable, Iterator, NamedTuple, Optional, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from beam_jobs.cli import progress
from beam_jobs.images.decode import DRAFT_FACTOR, DecodeError, resize_one
from beam_jobs.images.decode_stage import DecodeImages
from beam_jobs.predict.model import LoadedModel, Preprocessing, model_input, top_k
from beam_jobs.predict.model import ModelInput as ServingInput
from beam_jobs.runs import read as runs
from beam_jobs.sources.elements import (
    DEAD_LETTER,
    INFERENCE_FAILED,
    ModelInput,
    SourceImage,
    dead_letter,
)
from schemas.run import STATS_FILE

UNSPLIT = "predict"  # the extract decode stage carries a split; predictions have none
PREDICTIONS = "predictions"
NAMESPACE = progress.NAMESPACE  # the progress line counts records in this namespace
# One prediction row; CSV holds the same columns, the two lists as JSON arrays.
COLUMNS = ("uri", "image_id", "source_label", "label", "probability", "top_k_labels",
           "top_k_probabilities", "ood_score", "in_distribution")

Key = tuple[str, str, str]  # (uri, image_id, the source's own label)
_PREDICTED = Metrics.counter(NAMESPACE, progress.RECORDS)


def arrow_schema():
    import pyarrow as pa

    return pa.schema([("uri", pa.string()), ("image_id", pa.string()),
                      ("source_label", pa.string()), ("label", pa.string()),
                      ("probability", pa.float32()),
                      ("top_k_labels", pa.list_(pa.string())),
                      ("top_k_probabilities", pa.list_(pa.float32())),
                      ("ood_score", pa.float32()), ("in_distribution", pa.bool_())])


def _rejected_by_source(image: SourceImage) -> Optional[str]:
    """The dead letter of an input the source found but could not read, else None."""
    if image.rejected is None:
        return None
    reason, detail = image.rejected
    return dead_letter(image.uri, "read", reason, detail)


class _ToModelInput(beam.DoFn):
    """SourceImage → (key, model input) decoded inline; unusable inputs leave as dead letters."""

    def __init__(self, prep: Preprocessing, max_pixels: int):
        self._prep = prep
        self._max_pixels = max_pixels

    def process(self, image: SourceImage) -> Iterator:
        letter = _rejected_by_source(image)
        if letter is not None:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, letter)
            return
        try:
            value = model_input(image.encoded, image.pixels, self._prep, self._max_pixels)
        except DecodeError as err:
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER, dead_letter(image.uri, "decode", err.reason, err.detail))
            return
        yield (image.uri, image.image_id, image.label), value


class _SetAsideRejected(beam.DoFn):
    def process(self, image: SourceImage) -> Iterator:
        letter = _rejected_by_source(image)
        if letter is not None:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, letter)
        else:
            yield UNSPLIT, image


def _keyed_square(item: ModelInput, size: int, policy: str) -> tuple[Key, np.ndarray]:
    """The extract job's decode stage hands small images on at native size: make them S×S
    with the same resize, so a batch stacks."""
    pixels = item.image
    if pixels.shape != (size, size, 3):
        pixels = resize_one(pixels, size, policy)
    return (item.uri, item.image_id, item.label), pixels


class ModelInputs(NamedTuple):
    inputs: Any  # PCollection of (key, model input)
    dead_letter: Any  # PCollection of dead-letter lines


class ToModelInputs(beam.PTransform):
    """SourceImage → `.inputs` (key, pixels) and `.dead_letter` lines.

    Exports that take pixels decode through the extract job's own stage (`DecodeImages`: the
    same `decode_for_backbone` pixels, on a thread pool that overlaps decoding with the model);
    legacy exports, or runs decoded at another JPEG factor, decode inline.
    """

    def __init__(self, prep: Preprocessing, max_pixels: int):
        super().__init__()
        self._prep = prep
        self._max_pixels = max_pixels

    def expand(self, images) -> ModelInputs:
        prep = self._prep
        if not prep.takes_pixels or prep.jpeg_dct_scaling_factor != DRAFT_FACTOR:
            out = images | beam.ParDo(_ToModelInput(prep, self._max_pixels)).with_outputs(
                DEAD_LETTER, main="inputs")
            return ModelInputs(out.inputs, out[DEAD_LETTER])
        usable = images | "SetAsideRejected" >> beam.ParDo(_SetAsideRejected()).with_outputs(
            DEAD_LETTER, main="usable")
        decoded = usable.usable | "Decode" >> DecodeImages(self._max_pixels, prep.image_size,
                                                           prep.resize_policy)
        inputs = decoded.decoded | "Square" >> beam.Map(_keyed_square, prep.image_size,
                                                        prep.resize_policy)
        dead = (usable[DEAD_LETTER], decoded[DEAD_LETTER]) | "DeadLetters" >> beam.Flatten()
        return ModelInputs(inputs, dead)


class ServingModelHandler(ModelHandler[ServingInput, PredictionResult, LoadedModel]):
    """Batches of model inputs → class probabilities, through the export's own signature."""

    def __init__(self, model_dir: str, prep: Preprocessing, max_batch_size: int = 64):
        # Fixed-size batches: small ones cost the backbone up to twice as much per image.
        super().__init__(min_batch_size=max_batch_size, max_batch_size=max_batch_size)
        self._model_dir = model_dir
        self._prep = prep

    def load_model(self) -> LoadedModel:
        return LoadedModel(self._model_dir, self._prep)

    def run_inference(self, batch: Sequence[ServingInput], model: LoadedModel,
                      inference_args: Optional[dict[str, Any]] = None
                      ) -> Iterable[PredictionResult]:
        scored = model.score(batch)
        if scored.ood_score is None:
            return [PredictionResult(None, (row, None, None)) for row in scored.probabilities]
        return [PredictionResult(None, (row, float(score), bool(inside))) for row, score, inside
                in zip(scored.probabilities, scored.ood_score, scored.in_distribution)]

    def get_num_bytes(self, batch: Sequence[ServingInput]) -> int:
        return sum(len(x) if isinstance(x, bytes) else x.nbytes for x in batch)

    def get_metrics_namespace(self) -> str:
        return "predict_model"


def to_prediction_row(keyed: tuple[Key, PredictionResult], labels: Sequence[str],
                      k: int) -> dict[str, Any]:
    (uri, image_id, source_label), result = keyed
    inference: Any = result.inference  # (probabilities, ood_score, in_distribution)
    probabilities, ood_score, in_distribution = inference
    best = top_k(np.asarray(probabilities), labels, k)
    _PREDICTED.inc()
    return {"uri": uri, "image_id": image_id, "source_label": source_label,
            "label": best[0][0], "probability": best[0][1],
            "top_k_labels": [label for label, _ in best],
            "top_k_probabilities": [probability for _, probability in best],
            "ood_score": ood_score, "in_distribution": in_distribution}


def failed_batch_to_dead_letters(failure) -> list[str]:
    batch, error = failure
    return [dead_letter(key[0], "inference", INFERENCE_FAILED, repr(error)) for key, _ in batch]


def csv_line(row: dict[str, Any]) -> str:
    values = [json.dumps(row[c]) if isinstance(row[c], list)
              else ("" if row[c] is None else row[c]) for c in COLUMNS]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(values)
    return buffer.getvalue()


class WritePredictions(beam.PTransform):
    """Rows → `predictions-*.parquet` and `predictions-*.csv` under the output folder; Beam's
    file sinks stage and finalize each shard once, so a retried bundle never duplicates rows."""

    def __init__(self, output: str):
        super().__init__()
        self._prefix = runs.join(output, PREDICTIONS)

    def expand(self, rows):
        rows | "Parquet" >> beam.io.WriteToParquet(self._prefix, arrow_schema(),
                                                   file_name_suffix=".parquet")
        return (rows
                | "CsvLine" >> beam.Map(csv_line)
                | "Csv" >> beam.io.WriteToText(self._prefix, file_name_suffix=".csv",
                                               header=",".join(COLUMNS)))


def _tally(_, inputs: int, predicted: int, flagged: int,
           reasons: Iterable[tuple[str, int]]) -> str:
    return json.dumps({"inputs": inputs, "predicted": predicted, "out_of_distribution": flagged,
                       "dead_letters": dict(reasons)})


def _out_of_distribution(row: dict[str, Any]) -> bool:
    return row.get("in_distribution") is False  # None: an export without scores


class WriteTally(beam.PTransform):
    """Every input counted once (predicted, or rejected per reason) from the data itself, into
    the transient stats file the commit folds into manifest.json."""

    def __init__(self, output: str):
        super().__init__()
        self._output = output

    def expand(self, pcolls: dict[str, Any]):
        inputs = pcolls["inputs"] | "CountInputs" >> beam.combiners.Count.Globally()
        predicted = pcolls["rows"] | "CountPredicted" >> beam.combiners.Count.Globally()
        flagged = (pcolls["rows"] | "Unlike" >> beam.Filter(_out_of_distribution)
                   | "CountUnlike" >> beam.combiners.Count.Globally())
        reasons = (pcolls["dead_letters"]
                   | "Reason" >> beam.Map(lambda line: json.loads(line)["reason"])
                   | "CountRejected" >> beam.combiners.Count.PerElement())
        return (pcolls["inputs"].pipeline
                | "One" >> beam.Create([None])
                | "Tally" >> beam.Map(_tally, beam.pvalue.AsSingleton(inputs),
                                      beam.pvalue.AsSingleton(predicted),
                                      beam.pvalue.AsSingleton(flagged),
                                      beam.pvalue.AsList(reasons))
                | "Write" >> beam.io.WriteToText(runs.join(self._output, STATS_FILE),
                                                 file_name_suffix=".json", shard_name_template=""))
