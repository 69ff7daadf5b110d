"""tv-extract: images → decoded, deduplicated, split → backbone → committed run of shards.

    python -m beam_jobs.extract --source=idx:/usr/share/datasets/fashion-mnist \\
        --output=/tmp/tv --limit=train=500,test=100

The graph reads like the data path; every rejected input leaves as a dead letter with its
reason, and the run is published only after the accounting balances.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Optional, Sequence

import apache_beam as beam
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from schemas import record
from beam_jobs import backbones, commit, runs, sources
from beam_jobs.cli import main
from beam_jobs.decode import DecodeImages
from beam_jobs.elements import INFERENCE_FAILED, ModelInput, dead_letter
from beam_jobs.errors import UserError
from beam_jobs.inference import BackboneModelHandler
from beam_jobs.options import ExtractOptions
from beam_jobs.sinks import WriteDeadLetters, WriteShards, WriteStats
from beam_jobs.splits import DeduplicateAndSplit, parse_percentages

log = logging.getLogger(__name__)


def _keyed(item: ModelInput) -> tuple[tuple[str, str, str, str], Any]:
    return (item.image_id, item.uri, item.label, item.split), item.image


def _to_record(keyed, labels: Sequence[str], fingerprint: str) -> dict[str, Any]:
    (image_id, uri, label, split), result = keyed
    return {record.IMAGE_ID: image_id, record.URI: uri, record.LABEL: label,
            record.LABEL_ID: labels.index(label), record.SPLIT: split,
            record.TRANSFER_VALUES: result.inference, record.BACKBONE: fingerprint}


def _failed_batch_to_dead_letters(failure) -> list[str]:
    batch, error = failure
    return [dead_letter(key[1], "inference", INFERENCE_FAILED, repr(error)) for key, _ in batch]


def _read_label_names(path: Optional[str]) -> Optional[list[str]]:
    if not path:
        return None
    if not runs.exists(path):
        raise UserError(f"--label_names file {path} does not exist.")
    return [line.strip() for line in runs.read_text(path).splitlines() if line.strip()]


def build_pipeline(p: beam.Pipeline, opts: ExtractOptions, backbone: backbones.Backbone,
                   run_dir: str) -> None:
    """The extract graph, from the source to the shards, dead letters and tallies."""
    percentages = parse_percentages(opts.splits)
    images = p | "ReadImages" >> sources.read_images(
        opts.source, sources.parse_limit(opts.limit), _read_label_names(opts.label_names))
    kept = images | "DeduplicateAndSplit" >> DeduplicateAndSplit(percentages)
    decoded = kept.kept | "DecodeImages" >> DecodeImages(opts.max_pixels)
    labels = (decoded.decoded
              | "Label" >> beam.Map(lambda item: item.label)
              | "DistinctLabels" >> beam.Distinct()
              | "SortLabels" >> beam.combiners.ToList()
              | "Sorted" >> beam.Map(sorted))
    handler = KeyedModelHandler(BackboneModelHandler(
        backbone, max_batch_size=opts.batch_size, intra_op_threads=opts.inference_threads))
    inferred, failed = (decoded.decoded
                        | "Key" >> beam.Map(_keyed)
                        | "RunInference" >> RunInference(handler).with_exception_handling())
    records = inferred | "ToRecord" >> beam.Map(
        _to_record, beam.pvalue.AsSingleton(labels), backbone.fingerprint)
    dead_letters = ((kept.dead_letter, decoded.dead_letter,
                     failed.failed_inferences | "FailedBatch" >> beam.FlatMap(
                         _failed_batch_to_dead_letters))
                    | "AllDeadLetters" >> beam.Flatten())
    records | "WriteShards" >> WriteShards(run_dir, backbone.feature_dim, opts.num_shards)
    dead_letters | "WriteDeadLetters" >> WriteDeadLetters(run_dir)
    ({"inputs": images, "records": records, "dead_letters": dead_letters}
     | "WriteStats" >> WriteStats(run_dir))


def run(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Parse flags (ours and Beam's in one parser), run the pipeline, commit the run."""
    options = PipelineOptions(argv)
    opts = options.view_as(ExtractOptions)
    parse_percentages(opts.splits)  # flag errors before anything expensive
    sources.parse_limit(opts.limit)
    backbone = backbones.load(opts.backbone)
    run_id = opts.run_id or commit.new_run_id()
    run_dir = runs.join(opts.output.rstrip("/"), runs.RUNS_DIR, run_id)
    if runs.exists(runs.join(run_dir, runs.SUCCESS)):
        raise UserError(f"Run {run_dir} is already committed; choose another --run_id.")
    started = time.time()
    try:
        with beam.Pipeline(options=options) as p:
            build_pipeline(p, opts, backbone, run_dir)
        stats = commit.read_stats(run_dir)
        elapsed = time.time() - started
        manifest = commit.commit(run_dir, {
            "run_id": run_id, "parent_runs": [], "source": opts.source,
            "options": {"splits": opts.splits, "limit": opts.limit,
                        "resize": {"policy": "squash", "method": "bilinear+antialias"}},
            "backbone": {"name": backbone.name, "fingerprint": backbone.fingerprint,
                         "image_size": backbone.image_size, "feature_dim": backbone.feature_dim,
                         "handle": opts.backbone},
            "durations": {"total_s": round(elapsed, 2)},
            "versions": commit.library_versions()}, stats)
    except BaseException:
        commit.abandon(run_dir)
        raise
    _report(run_dir, manifest, elapsed)
    return manifest


def _report(run_dir: str, manifest: dict[str, Any], elapsed: float) -> None:
    per_split = {s: sum(c.values()) for s, c in manifest["counts"].items()}
    print(f"Committed run {manifest['run_id']} at {run_dir}")
    print(f"  {manifest['inputs']} inputs: {manifest['accepted']} accepted {per_split}, "
          f"{manifest['rejected']} rejected {manifest['dead_letters']}")
    print(f"  {elapsed:.1f} s, {manifest['inputs'] / max(elapsed, 1e-9):.1f} images/s, "
          f"backbone {manifest['backbone']['fingerprint']}")


def console() -> int:
    return main(run)


if __name__ == "__main__":
    sys.exit(console())
