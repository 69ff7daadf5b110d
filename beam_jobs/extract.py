"""tv-extract: images → decoded, deduplicated, split → backbone → committed run of shards.

    python -m beam_jobs.extract --source=idx:/usr/share/datasets/fashion-mnist \\
        --output=/tmp/tv --limit=train=500,test=100

The graph reads like the data path; every rejected input leaves as a dead letter with its
reason, and the run is published only after the accounting balances.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from typing import Any, Optional, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from schemas import record
from beam_jobs import backbones, cli, commit, incremental, progress, runs, sources
from beam_jobs.cli import main
from beam_jobs.decode import DecodeImages
from beam_jobs.elements import INFERENCE_FAILED, ModelInput, dead_letter
from beam_jobs.errors import UserError
from beam_jobs.inference import BackboneModelHandler, pin_tf_threads, threads_per_worker
from beam_jobs.options import ExtractOptions
from beam_jobs.sinks import ToRecordBatches, WriteDeadLetters, WriteShards, WriteStats
from beam_jobs.splits import (DeduplicateAndSplit, SelectPlanned, SetAsideUnusable,
                              parse_percentages, rejected_uri)
from beam_jobs.transform import AnalyzeAndWriteTransform

log = logging.getLogger(__name__)
_RECORDS = Metrics.counter(progress.NAMESPACE, progress.RECORDS)
_INFERENCE_FAILED = Metrics.counter(progress.NAMESPACE, "inference_failed")
EXAMPLE = """example:
  tv-extract --source=idx:/usr/share/datasets/fashion-mnist --output=/tmp/tv \\
      --label_names=examples/fashion_mnist_labels.txt --limit=train=500,test=100
  tv-extract --config=extract.yaml --direct_num_workers=2   # flags override the file"""
BEAM_NOTE = ("Any Beam pipeline option is accepted as well (--runner, --direct_num_workers, "
             "--direct_running_mode, --temp_location, --project, --region, --setup_file, "
             "--flink_master, --environment_type ...); see docs/runners.md.")


def _keyed(item: ModelInput) -> tuple[tuple[str, str, str, str], Any]:
    return (item.image_id, item.uri, item.label, item.split), item.image


def _to_record(keyed, labels: Sequence[str], fingerprint: str) -> dict[str, Any]:
    (image_id, uri, label, split), result = keyed
    _RECORDS.inc()
    return {record.IMAGE_ID: image_id, record.URI: uri, record.LABEL: label,
            record.LABEL_ID: labels.index(label), record.SPLIT: split,
            record.TRANSFER_VALUES: result.inference, record.BACKBONE: fingerprint}


def _failed_batch_to_dead_letters(failure) -> list[str]:
    batch, error = failure
    _INFERENCE_FAILED.inc(len(batch))
    return [dead_letter(key[1], "inference", INFERENCE_FAILED, repr(error)) for key, _ in batch]


def _read_label_names(path: Optional[str]) -> Optional[list[str]]:
    if not path:
        return None
    if not runs.exists(path):
        raise UserError(f"--label_names file {path} does not exist.")
    return [line.strip() for line in runs.read_text(path).splitlines() if line.strip()]


def build_pipeline(p: beam.Pipeline, opts: ExtractOptions, backbone: backbones.Backbone,
                   run_dir: str, transform_temp_dir: str,
                   known_runs: Sequence[runs.Run] = ()) -> None:
    """The extract graph, from the source to the shards, transform_fn, dead letters and tallies.

    `transform_temp_dir` is tensorflow-transform's scratch folder (see `_transform_temp_dir`).
    """
    percentages = parse_percentages(opts.splits)
    source_config = sources.config_from_options(opts, _read_label_names(opts.label_names))
    # Pass 1 plans on ids, uris and labels only (never pixels): what is unusable, duplicated
    # or already extracted, and the run's labels.
    images = p | "ReadImages" >> sources.read_images(opts.source, config=source_config)
    usable = images | "SetAsideUnusable" >> SetAsideUnusable()
    copies, skipped = usable.kept, []
    if known_runs:  # --incremental with earlier runs of this backbone: extract the delta only
        delta = usable.kept | "DropAlreadyExtracted" >> incremental.DropAlreadyExtracted(
            known_runs, run_dir)
        copies, skipped = delta.new, [delta.known_uris]
    plan = copies | "DeduplicateAndSplit" >> DeduplicateAndSplit(percentages)
    labels = (plan.kept
              | "Label" >> beam.Map(lambda copy: copy.label)
              | "DistinctLabels" >> beam.Distinct()
              | "SortLabels" >> beam.combiners.ToList()
              | "Sorted" >> beam.Map(sorted))
    rejected_uris = ((usable.dead_letter, plan.dead_letter)
                     | "FirstPassDeadLetters" >> beam.Flatten()
                     | "RejectedUri" >> beam.FlatMap(rejected_uri))
    skip = [rejected_uris, *skipped] | "Skip" >> beam.Flatten()
    # Pass 2 streams the images again through decode, backbone and sinks in one fused stage,
    # so no stage ever holds the whole collection (in-memory runners keep every shuffle).
    selected = (p
                | "ReadImagesAgain" >> sources.read_images(opts.source, config=source_config)
                | "SelectPlanned" >> SelectPlanned(skip, percentages))
    decoded = selected.kept | "DecodeImages" >> DecodeImages(opts.max_pixels)
    handler = KeyedModelHandler(BackboneModelHandler(
        backbone, max_batch_size=opts.batch_size, intra_op_threads=threads_per_worker(opts),
        resize_policy=opts.resize_policy))
    inferred, failed = (decoded.decoded
                        | "Key" >> beam.Map(_keyed)
                        | "RunInference" >> RunInference(handler).with_exception_handling())
    records = inferred | "ToRecord" >> beam.Map(
        _to_record, beam.pvalue.AsSingleton(labels), backbone.fingerprint)
    dead_letters = ((usable.dead_letter, plan.dead_letter, selected.dead_letter,
                     decoded.dead_letter,
                     failed.failed_inferences | "FailedBatch" >> beam.FlatMap(
                         _failed_batch_to_dead_letters))
                    | "AllDeadLetters" >> beam.Flatten())
    batches = records | "ToRecordBatches" >> ToRecordBatches(backbone.feature_dim)
    batches | "WriteShards" >> WriteShards(run_dir, backbone.feature_dim, opts.num_shards)
    (batches
     | "TrainOnly" >> beam.Filter(lambda kv: kv[0] == record.SPLITS[0])
     | "TrainBatch" >> beam.Values()
     | "AnalyzeTransform" >> AnalyzeAndWriteTransform(run_dir, backbone.feature_dim,
                                                      transform_temp_dir))
    dead_letters | "WriteDeadLetters" >> WriteDeadLetters(run_dir)
    inputs = (usable.dead_letter, copies) | "Inputs" >> beam.Flatten()  # the delta's, if any
    ({"inputs": inputs, "batches": batches, "dead_letters": dead_letters}
     | "WriteStats" >> WriteStats(run_dir))


def run(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Parse flags (ours and Beam's in one parser), run the pipeline, commit the run."""
    options = cli.parse_pipeline_options(argv, ExtractOptions, prog="tv-extract",
                                         description=__doc__.split("\n")[0], example=EXAMPLE,
                                         beam_note=BEAM_NOTE)
    opts = options.view_as(ExtractOptions)
    parse_percentages(opts.splits)  # flag errors before anything expensive
    _check_counts(opts)
    sources.parse_limit(opts.limit)
    backbone = backbones.load(opts.backbone)
    run_id = opts.run_id or commit.new_run_id()
    run_dir = runs.join(opts.output.rstrip("/"), runs.RUNS_DIR, run_id)
    cli.check_writable(opts.output, "--output")
    if runs.exists(runs.join(run_dir, runs.SUCCESS)):
        raise UserError(f"Run {run_dir} is already committed; choose another --run_id.")
    known = incremental.known_runs(opts.output, backbone.fingerprint) if opts.incremental else []
    parents = [run.run_id for run in known]
    if threads_per_worker(options):  # before any worker process starts: they inherit it
        pin_tf_threads(threads_per_worker(options))
    started = time.time()
    try:
        with _transform_temp_dir(options, run_id) as temp_dir:
            p = beam.Pipeline(options=options)
            build_pipeline(p, opts, backbone, run_dir, temp_dir, known)
            progress.run_pipeline(p, enabled=progress.wanted(opts.no_progress),
                                  interval_s=opts.progress_interval)
        stats = commit.read_stats(run_dir)
        already_extracted = incremental.pop_already_extracted(run_dir)
        if known and stats["inputs"] == 0:
            return incremental.nothing_new(run_dir, parents, already_extracted)
        elapsed = time.time() - started
        manifest = commit.commit(run_dir, {
            "run_id": run_id, "parent_runs": parents, "source": opts.source,
            "incremental": opts.incremental, "already_extracted": already_extracted,
            "options": {"splits": opts.splits, "limit": opts.limit,
                        "resize": {"policy": opts.resize_policy,
                                   "method": "bilinear, antialiased when shrinking"}},
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


def _check_counts(opts: ExtractOptions) -> None:
    """Numbers argparse accepts but the job cannot use (Beam would take --num_shards=-1 as 0)."""
    for flag, value, least in (("num_shards", opts.num_shards, 0),
                               ("batch_size", opts.batch_size, 1),
                               ("max_pixels", opts.max_pixels, 1)):
        if value < least:
            raise UserError(f"--{flag}={value} must be at least {least}.")


def _transform_temp_dir(options: PipelineOptions, run_id: str):
    """TFT's scratch folder: under --temp_location when given (remote runners need a shared
    one), else a local temporary folder removed when the pipeline is done."""
    import contextlib

    from apache_beam.options.pipeline_options import GoogleCloudOptions

    temp_location = options.view_as(GoogleCloudOptions).temp_location
    if temp_location:
        return contextlib.nullcontext(runs.join(temp_location, "tft", run_id))
    return tempfile.TemporaryDirectory(prefix="tv-tft-")


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
