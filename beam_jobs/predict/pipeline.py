"""`tv-predict --source=KIND:URI --output=DIR`: batch prediction with an exported model, a Beam job.

    tv-predict --model=/data/model --source=folder:gs://bucket/new --output=gs://bucket/pred \\
        [--top_k=5] [any Beam pipeline option: --runner, --direct_num_workers, ...]

The same sources, Pillow decode and dead letters as tv-extract, RunInference over the export's
pixels signature, and the output committed like a run: predictions-*.parquet and
predictions-*.csv (with each image's `ood_score` and `in_distribution`), dead_letters/*.jsonl,
manifest.json (inputs = predicted + rejected; `out_of_distribution`: how many predictions were
flagged unlike the training data, null for an export without scores), and
`_SUCCESS` written last, so a killed job leaves nothing a reader takes as complete.
"""

from __future__ import annotations

import datetime
import sys
import time
from typing import Any, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import sources
from beam_jobs.cli import flags, progress
from beam_jobs.cli.errors import UserError
from beam_jobs.extract.options import ExtractOptions  # noqa: F401 - its shared flags register first
from beam_jobs.predict import model as predict_model
from beam_jobs.predict import stages
from beam_jobs.runs import commit
from beam_jobs.runs import read as runs
from beam_jobs.runs.sinks import WriteDeadLetters
from schemas.run import STATS_FILE

EXAMPLE = """example:
  tv-predict --model=/tmp/model --source=folder:/data/new_photos --output=/tmp/predictions
  tv-predict --model=gs://b/model --source=manifest:gs://b/new.csv --output=gs://b/pred \\
      --runner=DataflowRunner --project=P --region=R --temp_location=gs://b/tmp \\
      --setup_file=./setup.py"""
BEAM_NOTE = ("Any Beam pipeline option is accepted as well (--runner, --direct_num_workers, "
             "--direct_running_mode, --temp_location, --project, --region, --setup_file, "
             "--flink_master, --environment_type ...); see docs/runners.md.")
# What this job writes under --output: removed before a new attempt and after a failed one.
OUTPUT_PATTERNS = (f"{stages.PREDICTIONS}-*", f"{runs.DEAD_LETTERS_DIR}/*", runs.MANIFEST,
                   f"{STATS_FILE}*")


def _add_once(parser, flag: str, **kwargs) -> None:
    """tv-extract's options share some flags (--source, --output, --batch_size...); Beam puts
    every PipelineOptions class in one parser, so a flag is defined by the first class only."""
    if flag not in parser._option_string_actions:  # argparse has no public "is it defined"
        parser.add_argument(flag, **kwargs)


class PredictOptions(PipelineOptions):
    """Defined after ExtractOptions (imported above), so Beam registers the shared flags from
    there first and skips them here; REQUIRED is checked by flags.parse_pipeline_options."""

    REQUIRED = ("model", "source", "output")

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        _add_once(parser, "--model", help="a tv-train --model_dir (holding serving/)")
        _add_once(parser, "--source", help="KIND:URI, KIND in folder | manifest | tfrecord | "
                                           "cifar10 | idx, as tv-extract reads them")
        _add_once(parser, "--output", help="folder (any Beam filesystem) that receives "
                                           "predictions-*.parquet/.csv, dead_letters/, "
                                           "manifest.json and _SUCCESS")
        _add_once(parser, "--top_k", type=int, default=5, help="labels kept per image")
        _add_once(parser, "--batch_size", type=int, default=64,
                  help="largest batch fed to the model")
        _add_once(parser, "--max_pixels", type=int, default=89_478_485,
                  help="images declaring more pixels are rejected as too_large")
        _add_once(parser, "--limit", default=None, help="read only the first N images")
        _add_once(parser, "--tfrecord_image_key", default=None,
                  help="tfrecord source: feature key(s) of the encoded image")
        _add_once(parser, "--tfrecord_label_key", default=None,
                  help="tfrecord source: feature key(s) of the label")
        _add_once(parser, "--verbose", action="store_true", help="log more, keep tracebacks")
        _add_once(parser, "--no_progress", action="store_true", help="no progress lines")
        _add_once(parser, "--progress_interval", type=float, default=10.0,
                  help="seconds between progress lines")


def build_pipeline(p: beam.Pipeline, opts: PredictOptions, prep: predict_model.Preprocessing,
                   labels: Sequence[str]) -> None:
    """Source → model inputs → RunInference → Parquet + CSV rows, dead letters and the tally."""
    output = opts.output.rstrip("/")
    config = sources.config_from_options(opts)
    images = p | "ReadImages" >> sources.read_images(opts.source, config=config)
    inputs = images | "ToModelInputs" >> stages.ToModelInputs(prep, opts.max_pixels)
    handler = KeyedModelHandler(stages.ServingModelHandler(opts.model, prep, opts.batch_size))
    inferred, failed = (inputs.inputs
                        | "RunInference" >> RunInference(handler).with_exception_handling())
    rows = inferred | "ToPredictionRow" >> beam.Map(stages.to_prediction_row, list(labels),
                                                    opts.top_k)
    rows | "WritePredictions" >> stages.WritePredictions(output)
    dead_letters = ((inputs.dead_letter,
                     failed.failed_inferences | "FailedBatch" >> beam.FlatMap(
                         stages.failed_batch_to_dead_letters))
                    | "AllDeadLetters" >> beam.Flatten())
    dead_letters | "WriteDeadLetters" >> WriteDeadLetters(output)
    ({"inputs": images, "rows": rows, "dead_letters": dead_letters}
     | "WriteTally" >> stages.WriteTally(output))


def parse_options(argv: Optional[Sequence[str]]) -> PipelineOptions:
    options = flags.parse_pipeline_options(argv, PredictOptions, prog="tv-predict",
                                         description=__doc__.split("\n")[0], example=EXAMPLE,
                                         beam_note=BEAM_NOTE)
    stray = _positionals(sys.argv[1:] if argv is None else argv)
    if stray:
        raise UserError(f"Give either IMAGE files ({stray[0]} ...) or --source=KIND:URI "
                        f"--output=DIR, not both.")
    opts = options.view_as(PredictOptions)
    predict_model.check_top_k(opts.top_k)
    for flag, value in (("batch_size", opts.batch_size), ("max_pixels", opts.max_pixels)):
        if value < 1:
            raise UserError(f"--{flag}={value} must be at least 1.")
    sources.read_images(opts.source, config=sources.config_from_options(opts))  # KIND:URI
    return options


def _positionals(argv: Sequence[str]) -> list[str]:
    """Arguments no pipeline option takes (image paths typed beside --source), parsed the way
    Beam parses them, so `--runner DirectRunner` is not mistaken for one."""
    from apache_beam.options import pipeline_options

    from beam_jobs.cli.config_file import expand_config

    parser = pipeline_options._BeamArgumentParser(allow_abbrev=False)
    classes: dict[str, type] = {}
    for cls in PipelineOptions.__subclasses__():
        classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)  # type: ignore[attr-defined]
    _, rest = parser.parse_known_args(expand_config(argv))
    return [arg for arg in rest if not arg.startswith("-")]


def run(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Parse flags, run the job, commit the output folder; return the manifest."""
    options = parse_options(argv)
    opts = options.view_as(PredictOptions)
    predict_model.serving_dir(opts.model)  # a missing model fails now, not in the workers
    prep = predict_model.read_preprocessing(opts.model)
    labels = predict_model.read_labels(opts.model)
    output = opts.output.rstrip("/")
    flags.check_writable(output, "--output")
    if runs.exists(runs.join(output, runs.SUCCESS)):
        raise UserError(f"{output} already holds committed predictions; choose another "
                        f"--output.")
    remove_outputs(output)  # what an earlier, killed attempt left
    started = time.time()
    try:
        p = beam.Pipeline(options=options)
        build_pipeline(p, opts, prep, labels)
        progress.run_pipeline(p, enabled=progress.wanted(opts.no_progress),
                              interval_s=opts.progress_interval)
        manifest = commit_predictions(output, commit.read_stats(output), {
            "model": opts.model, "source": opts.source, "labels": labels, "top_k": opts.top_k,
            "preprocessing": _describe(prep),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "versions": commit.library_versions()}, time.time() - started)
    except BaseException:
        remove_outputs(output)
        raise
    _report(output, manifest)
    if manifest["predicted"] == 0:
        raise UserError(f"None of the {manifest['rejected']} images could be classified; see "
                        f"{runs.join(output, runs.DEAD_LETTERS_DIR)} for the reasons.")
    return manifest


def _describe(prep: predict_model.Preprocessing) -> dict[str, Any]:
    if not prep.takes_pixels:
        return {"signature": prep.signature, "input": "PNG of the Pillow-decoded image "
                                                      "(export without preprocessing.json)"}
    return {"signature": prep.signature, "image_size": prep.image_size,
            "resize_policy": prep.resize_policy,
            "jpeg_dct_scaling_factor": prep.jpeg_dct_scaling_factor, "ood": prep.has_ood}


def commit_predictions(output: str, stats: dict[str, Any], manifest: dict[str, Any],
                       elapsed: float) -> dict[str, Any]:
    """Check inputs = predicted + rejected, write manifest.json, drop the stats, `_SUCCESS`."""
    rejected = sum(stats["dead_letters"].values())
    if stats["inputs"] != stats["predicted"] + rejected:
        raise RuntimeError(f"Accounting mismatch: {stats['inputs']} inputs but "
                           f"{stats['predicted']} predicted + {rejected} rejected; the "
                           f"predictions are not committed.")
    if stats["inputs"] == 0:
        raise UserError("The source holds no images: nothing to predict.")
    manifest = dict(manifest, inputs=stats["inputs"], predicted=stats["predicted"],
                    rejected=rejected, dead_letters=stats["dead_letters"],
                    out_of_distribution=(stats.get("out_of_distribution")
                                         if manifest["preprocessing"].get("ood") else None),
                    durations={"total_s": round(elapsed, 2)})
    commit.publish(output, manifest)
    return manifest


def remove_outputs(output: str) -> None:
    """Delete what this job writes (never anything else under --output)."""
    patterns = [runs.join(output, pattern) for pattern in OUTPUT_PATTERNS]
    found = [m.path for result in FileSystems.match(patterns) for m in result.metadata_list]
    if found:
        FileSystems.delete(found)


def _report(output: str, manifest: dict[str, Any]) -> None:
    elapsed = manifest["durations"]["total_s"]
    print(f"Committed predictions at {output}")
    print(f"  {manifest['inputs']} inputs: {manifest['predicted']} predicted, "
          f"{manifest['rejected']} rejected {manifest['dead_letters']}")
    if manifest["out_of_distribution"] is None:
        print(f"  {predict_model.OLD_EXPORT_NOTE}")
    else:
        print(f"  {manifest['out_of_distribution']} of {manifest['predicted']} predictions "
              f"flagged unlike the training data (in_distribution false)")
    print(f"  {elapsed:.1f} s, {manifest['inputs'] / max(elapsed, 1e-9):.1f} images/s, "
          f"model {manifest['model']}")
