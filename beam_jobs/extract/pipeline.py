"""tv-extract: images → decoded, deduplicated, split → backbone → committed run of shards.

    python -m beam_jobs.extract --source=idx:/usr/share/datasets/fashion-mnist \\
        --output=/tmp/tv --limit=train=500,test=100

The graph reads like the data path; every rejected input leaves as a dead letter with its
reason, and the run is published only after the accounting balances.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from typing import Any, Optional, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

from beam_jobs import backbones, sources
from beam_jobs.cli import flags, progress
from beam_jobs.cli.errors import UserError
from beam_jobs.extract import driver
from beam_jobs.extract.options import ExtractOptions, threads_per_worker
from beam_jobs.extract.plan import incremental
from beam_jobs.extract.plan.chunks import (
    InChunk,
    ReadChunkPlan,
    SelectChunk,
    WritePlan,
    chunk_count,
    chunk_of,
    letter_uri,
)
from beam_jobs.extract.plan.splits import (
    DeduplicateAndSplit,
    SelectPlanned,
    SetAsideUnusable,
    assign_split,
    parse_percentages,
    rejected_uri,
)
from beam_jobs.extract.stages import augment
from beam_jobs.extract.stages.augment import AddViews
from beam_jobs.extract.stages.inference import BackboneModelHandler
from beam_jobs.extract.stages.tft import AnalyzeAndWriteTransform
from beam_jobs.images.decode_stage import DecodeImages
from beam_jobs.runs import commit  # noqa: F401 - tests patch extract.commit
from beam_jobs.runs import extract_jobs as jobs
from beam_jobs.runs import read as runs
from beam_jobs.runs.sinks import (
    ToRecordBatches,
    WriteDeadLetters,
    WriteShards,
    WriteStats,
    originals,
)
from beam_jobs.sources.elements import INFERENCE_FAILED, ModelInput, dead_letter
from schemas import record

log = logging.getLogger(__name__)
_RECORDS = Metrics.counter(progress.NAMESPACE, progress.RECORDS)
_INFERENCE_FAILED = Metrics.counter(progress.NAMESPACE, "inference_failed")
_VIEWS_FAILED = Metrics.counter(progress.NAMESPACE, "view_inference_failed")
EXAMPLE = """example:
  tv-extract --source=idx:/usr/share/datasets/fashion-mnist --output=/tmp/tv \\
      --label_names=examples/fashion_mnist_labels.txt --limit=train=500,test=100
  tv-extract --config=extract.yaml --direct_num_workers=2   # flags override the file"""
BEAM_NOTE = ("Any Beam pipeline option is accepted as well (--runner, --direct_num_workers, "
             "--direct_running_mode, --temp_location, --project, --region, --setup_file, "
             "--flink_master, --environment_type ...); see docs/runners.md.")


def _keyed(item: ModelInput) -> tuple[tuple[str, str, str, str, int], Any]:
    return (item.image_id, item.uri, item.label, item.split, item.view), item.image


def _to_record(keyed, labels: Sequence[str], fingerprint: str) -> dict[str, Any]:
    (image_id, uri, label, split, view), result = keyed
    if view == record.ORIGINAL_VIEW:  # progress counts images, as the plan does
        _RECORDS.inc()
    return {record.IMAGE_ID: image_id, record.URI: uri, record.LABEL: label,
            record.LABEL_ID: labels.index(label), record.SPLIT: split,
            record.TRANSFER_VALUES: result.inference, record.BACKBONE: fingerprint,
            record.VIEW: view}


def _failed_batch_to_dead_letters(failure) -> list[str]:
    """A dead letter per image whose original failed: an input is counted once, so a view
    that failed (its original may have passed in another batch) is only missing from the
    run's view_counts."""
    batch, error = failure
    originals = [key for key, _ in batch if key[4] == record.ORIGINAL_VIEW]
    _INFERENCE_FAILED.inc(len(originals))
    _VIEWS_FAILED.inc(len(batch) - len(originals))
    return [dead_letter(key[1], "inference", INFERENCE_FAILED, repr(error))
            for key in originals]


def _read_label_names(path: Optional[str]) -> Optional[list[str]]:
    if not path:
        return None
    if not runs.exists(path):
        raise UserError(f"--label_names file {path} does not exist.")
    return [line.strip() for line in runs.read_text(path).splitlines() if line.strip()]


def build_pipeline(p: beam.Pipeline, opts: ExtractOptions, backbone: backbones.Backbone,
                   run_dir: str, transform_temp_dir: str,
                   known_runs: Sequence[runs.Run] = (), plan_dir: Optional[str] = None) -> None:
    """A job's first graph: plan every input, then extract the first chunk into `run_dir`.

    With `plan_dir` the plan is written there for the other chunks (see beam_jobs.extract.plan.chunks);
    with one chunk (a job of at most --commit_every images) this is the whole job.
    `transform_temp_dir` is tensorflow-transform's scratch folder (see `_transform_temp_dir`).
    """
    percentages = parse_percentages(opts.splits)
    source_config = sources.config_from_options(opts, _read_label_names(opts.label_names))
    # Pass 1 plans on ids, uris and labels only (never pixels): what is unusable, duplicated
    # or already extracted, the job's labels and its chunks.
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
    first_letters = ((usable.dead_letter, plan.dead_letter)
                     | "FirstPassDeadLetters" >> beam.Flatten())
    rejected_uris = first_letters | "RejectedUri" >> beam.FlatMap(rejected_uri)
    skip = [rejected_uris, *skipped] | "Skip" >> beam.Flatten()
    chunks = beam.pvalue.AsSingleton(plan.kept
                                     | "CountPlanned" >> beam.combiners.Count.Globally()
                                     | "Chunks" >> beam.Map(chunk_count, opts.commit_every))
    if plan_dir:
        ({"kept": plan.kept, "dead_letters": first_letters, "labels": labels}
         | "WritePlan" >> WritePlan(plan_dir, chunks, _split_of(percentages)))
    # Pass 2 streams the first chunk's images again through decode, backbone and sinks in one
    # fused stage, so no stage ever holds the whole collection (in-memory runners keep every
    # shuffle).  Every outcome of an input lands in the chunk of its uri.
    selected = (p
                | "ReadImagesAgain" >> sources.read_images(opts.source, config=source_config)
                | "FirstChunk" >> beam.Filter(_in_first_chunk, chunks)
                | "SelectPlanned" >> SelectPlanned(skip, percentages))
    letters = first_letters | "FirstChunkLetters" >> beam.Filter(
        lambda line, n: chunk_of(letter_uri(line), n) == 0, chunks)
    inputs = ((usable.dead_letter | "LetterInputs" >> beam.Filter(
                  lambda line, n: chunk_of(letter_uri(line), n) == 0, chunks),
               copies | "CopyInputs" >> beam.Filter(_in_first_chunk, chunks))
              | "Inputs" >> beam.Flatten())  # the delta's, if any
    _extract_chunk(selected, letters, inputs, beam.pvalue.AsSingleton(labels), opts, backbone,
                   run_dir, transform_temp_dir,
                   reported=(inputs, letters) | "ReportPlan" >> progress.ReportPlan(),
                   skipped_files=p | "ListSkippedFiles" >> sources.skipped_files(opts.source))


def build_chunk_pipeline(p: beam.Pipeline, opts: ExtractOptions, backbone: backbones.Backbone,
                         run_dir: str, transform_temp_dir: str, job: jobs.Job,
                         chunk: int) -> None:
    """One later chunk of a planned job: read only its inputs again and extract them."""
    in_chunk = InChunk(job.chunks, chunk)
    source_config = dataclasses.replace(
        sources.config_from_options(opts, _read_label_names(opts.label_names)),
        uri_filter=in_chunk)
    planned = p | "ReadPlan" >> ReadChunkPlan(runs.join(job.path, jobs.PLAN_DIR), chunk)
    read = (p
            | "ReadImagesAgain" >> sources.read_images(opts.source, config=source_config)
            | "ThisChunk" >> beam.Filter(lambda image: in_chunk(image.uri)))
    selected = read | "SelectChunk" >> SelectChunk(planned.kept)
    letters = ((planned.dead_letter, selected.dead_letter) | "ReadLetters" >> beam.Flatten())
    inputs = ((planned.kept, planned.dead_letter) | "Inputs" >> beam.Flatten())
    reported = (inputs, planned.dead_letter) | "ReportPlan" >> progress.ReportPlan()
    planned_train = job.record["planned"].get(str(chunk), {}).get(record.SPLITS[0], 0)
    _extract_chunk(selected, letters, inputs, job.record["labels"], opts, backbone, run_dir,
                   transform_temp_dir, analyze=planned_train > 0, reported=reported)


class Redistribute(beam.PTransform):
    """Spread images over the workers by a GroupByKey on a hash of their uri.

    Not `beam.Reshuffle()`: with `--experiments=pre_optimize=all` (examples/flink.yaml) the
    Python SDK's fuser leaves Reshuffle to the runner as a known transform and then fuses it
    into the surrounding stage, where it is an identity; measured on Flink, one TaskManager
    still decoded every image. A GroupByKey is never fused away. The key is deterministic, so
    a retried stage partitions the same way.
    """

    def expand(self, images):  # elements: (split, SourceImage)
        return (images
                | "KeyByUri" >> beam.Map(lambda item: (zlib.crc32(item[1].uri.encode()), item))
                | "Group" >> beam.GroupByKey()
                | "Ungroup" >> beam.FlatMap(lambda keyed: keyed[1]))


def _in_first_chunk(item, chunks: int) -> bool:
    return chunk_of(item.uri, chunks) == 0


def _split_of(percentages):
    def split_of(copy) -> str:
        return assign_split(copy.image_id, copy.source_split, percentages)
    return split_of


def _extract_chunk(selected, first_letters, inputs, labels, opts: ExtractOptions,
                   backbone: backbones.Backbone, run_dir: str, transform_temp_dir: str,
                   analyze: bool = True, reported=None, skipped_files=None) -> None:
    """(split, SourceImage) → decode → backbone → shards, transform_fn, dead letters, tallies.

    `first_letters` are the chunk's dead letters from before decoding and `inputs` one element
    per input of the chunk (for the accounting); `labels` is the job's sorted label list (or a
    singleton view of it), so label ids agree across the job's runs.
    """
    kept = selected.kept if reported is None else (
        selected.kept | "AfterPlan" >> progress.AfterPlan(reported))  # the total comes first
    if opts.redistribute:  # spread one source's images over the workers (--help)
        kept = kept | "Redistribute" >> Redistribute()
    decoded = kept | "DecodeImages" >> DecodeImages(
        opts.max_pixels, backbone.image_size, opts.resize_policy,
        threads=threads_per_worker(opts) or None, in_flight=opts.batch_size)
    views = decoded.decoded | "AddViews" >> AddViews(
        backbone.image_size, opts.resize_policy, opts.augment_views,
        augment.policy_named(opts.augment_policy, opts.mirror_views), opts.mirror_views)
    handler = KeyedModelHandler(BackboneModelHandler(
        backbone, max_batch_size=opts.batch_size, intra_op_threads=threads_per_worker(opts),
        resize_policy=opts.resize_policy))
    inferred, failed = (views
                        | "Key" >> beam.Map(_keyed)
                        | "RunInference" >> RunInference(handler).with_exception_handling())
    records = inferred | "ToRecord" >> beam.Map(_to_record, labels, backbone.fingerprint)
    dead_letters = ((first_letters, selected.dead_letter, decoded.dead_letter,
                     failed.failed_inferences | "FailedBatch" >> beam.FlatMap(
                         _failed_batch_to_dead_letters))
                    | "AllDeadLetters" >> beam.Flatten())
    batches = records | "ToRecordBatches" >> ToRecordBatches(backbone.feature_dim)
    batches | "WriteShards" >> WriteShards(run_dir, backbone.feature_dim, opts.num_shards)
    if analyze:
        (batches
         | "TrainOnly" >> beam.Filter(lambda kv: kv[0] == record.SPLITS[0])
         | "TrainBatch" >> beam.Values()
         | "OriginalsOnly" >> beam.FlatMap(originals)  # the z-score must not depend on views
         | "AnalyzeTransform" >> AnalyzeAndWriteTransform(run_dir, backbone.feature_dim,
                                                          transform_temp_dir))
    dead_letters | "WriteDeadLetters" >> WriteDeadLetters(run_dir)
    ({"inputs": inputs, "batches": batches, "dead_letters": dead_letters,
      "skipped_files": skipped_files or (inputs.pipeline | "NoSkippedFiles" >> beam.Create(
          []).with_output_types(str))}
     | "WriteStats" >> WriteStats(run_dir))


def run(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Parse flags (ours and Beam's in one parser), then plan, extract and commit the job's
    chunks, resuming the same command's unfinished job (beam_jobs.extract.driver)."""
    options = flags.parse_pipeline_options(argv, ExtractOptions, prog="tv-extract",
                                         description=__doc__.split("\n")[0], example=EXAMPLE,
                                         beam_note=BEAM_NOTE)
    opts = options.view_as(ExtractOptions)
    parse_percentages(opts.splits)  # flag errors before anything expensive
    _check_counts(opts)
    augment.policy_named(opts.augment_policy, opts.mirror_views)
    sources.parse_limit(opts.limit)
    backbone = backbones.load(opts.backbone)
    flags.check_writable(opts.output, "--output")
    return driver.run_job(options, backbone, driver.Graphs(build_pipeline, build_chunk_pipeline))


def _check_counts(opts: ExtractOptions) -> None:
    """Numbers argparse accepts but the job cannot use (Beam would take --num_shards=-1 as 0)."""
    for flag, value, least in (("num_shards", opts.num_shards, 0),
                               ("batch_size", opts.batch_size, 1),
                               ("max_pixels", opts.max_pixels, 1),
                               ("commit_every", opts.commit_every, 1),
                               ("augment_views", opts.augment_views, 0)):
        if value < least:
            raise UserError(f"--{flag}={value} must be at least {least}.")
