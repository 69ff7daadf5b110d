"""The extract job's driver: plan once, extract chunk by chunk, commit each, resume the rest.

`tv-extract` finds the job its options name (beam_jobs.runs.extract_jobs): an unfinished one resumes at its
first uncommitted chunk, a finished one extracts nothing (unless --incremental, which plans a
new delta job, or --extract_again).  Otherwise it runs the first graph (plan + chunk 0),
commits the plan (`job.json`), commits chunk 0, then one graph per remaining chunk.  A kill at
any moment loses the chunk in flight and nothing committed.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from typing import Any, Callable, NamedTuple

import apache_beam as beam
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

from beam_jobs import backbones
from beam_jobs.cli import progress
from beam_jobs.cli.errors import UserError
from beam_jobs.extract.options import ExtractOptions, threads_per_worker
from beam_jobs.extract.plan import chunks, incremental
from beam_jobs.extract.stages import augment
from beam_jobs.extract.stages.inference import pin_tf_threads
from beam_jobs.images import decode as imaging
from beam_jobs.runs import commit, sinks
from beam_jobs.runs import extract_jobs as jobs
from beam_jobs.runs import read as runs


class Graphs(NamedTuple):
    """The two graphs a job runs (beam_jobs.extract): its first, and any later chunk's."""

    first: Callable[..., None]
    chunk: Callable[..., None]


def run_job(options: PipelineOptions, backbone: backbones.Backbone,
            graphs: Graphs) -> dict[str, Any]:
    """Run, resume or decline the job these options name; the single run's manifest, or a
    summary of the job's runs when it has several."""
    opts = options.view_as(ExtractOptions)
    key = jobs.job_key(opts, backbone.fingerprint)
    unfinished, finished = (None, None) if opts.extract_again else jobs.find_jobs(opts.output,
                                                                                   key)
    if finished and not unfinished and not opts.incremental:
        return _already_complete(opts.output, finished)
    if threads_per_worker(options):  # before any worker process starts: they inherit it
        pin_tf_threads(threads_per_worker(options))
    if unfinished is not None:
        _refuse_if_running(unfinished.path)
        print(f"Resuming job {unfinished.job_id}: {sum(unfinished.committed(opts.output))} of "
              f"{unfinished.chunks} chunks already committed.")
        with jobs.Heartbeat(unfinished.path):
            return _extract_chunks(options, backbone, graphs, unfinished)
    job_id = opts.run_id or jobs.new_job_id(key)
    if runs.exists(runs.join(_run_dir(opts, job_id), runs.SUCCESS)):
        raise UserError(f"Run {_run_dir(opts, job_id)} is already committed; choose another "
                        f"--run_id.")
    path = jobs.job_dir(opts.output, job_id)
    _refuse_if_running(path)
    if runs.exists(runs.join(path, jobs.JOB_FILE)):  # planned with other options
        raise UserError(f"--run_id={job_id} names a job planned with other options under "
                        f"{opts.output}; choose another --run_id.")
    commit.abandon(path)  # a same-named job killed while planning left no usable plan
    with jobs.Heartbeat(path):
        job = _plan(options, backbone, graphs, job_id, path, key)
        if not isinstance(job, jobs.Job):
            return job  # --incremental found nothing new
        return _extract_chunks(options, backbone, graphs, job)


def _run_dir(opts: ExtractOptions, run_id: str) -> str:
    return runs.join(opts.output.rstrip("/"), runs.RUNS_DIR, run_id)


def _refuse_if_running(path: str) -> None:
    beat = jobs.read_heartbeat(path)
    if jobs.is_alive(beat):
        raise UserError(f"Job {path} is being run by process {beat['pid']} on {beat['host']} "
                        f"(heartbeat {time.time() - beat['time']:.0f} s ago); wait for it or "
                        f"stop it before running the same command again.")


def _transform_temp_dir(options: PipelineOptions, run_id: str):
    """TFT's scratch folder: under --temp_location when given (remote runners need a shared
    one), else a local temporary folder removed when the pipeline is done."""
    temp_location = options.view_as(GoogleCloudOptions).temp_location
    if temp_location:
        return contextlib.nullcontext(runs.join(temp_location, "tft", run_id))
    return tempfile.TemporaryDirectory(prefix="tv-tft-")


def _run_graph(options: PipelineOptions, build: Callable[..., None], run_id: str,
               *args: Any) -> None:
    opts = options.view_as(ExtractOptions)
    with _transform_temp_dir(options, run_id) as temp_dir:
        p = beam.Pipeline(options=options)
        build(p, opts, *args[:2], temp_dir, *args[2:])
        progress.run_pipeline(p, enabled=progress.wanted(opts.no_progress),
                              interval_s=opts.progress_interval)


def _plan(options: PipelineOptions, backbone: backbones.Backbone, graphs: Graphs, job_id: str,
          path: str, key: str) -> jobs.Job | dict[str, Any]:
    """Run the first graph (plan + chunk 0), commit the plan, then chunk 0's run; with
    --incremental and nothing new, remove the job and say so (the returned dict)."""
    opts = options.view_as(ExtractOptions)
    known = incremental.known_runs(opts.output, backbone.fingerprint) if opts.incremental else []
    parents = [run.run_id for run in known]
    run_dir, started = _run_dir(opts, job_id), time.time()
    plan_dir = runs.join(path, jobs.PLAN_DIR)
    print(f"Planning job {job_id} and extracting its first chunk → run {job_id}", flush=True)
    try:
        _run_graph(options, graphs.first, job_id, backbone, run_dir, known, plan_dir)
        stats = commit.read_stats(run_dir)
        already_extracted = incremental.pop_already_extracted(run_dir)
        if known and stats["inputs"] == 0:
            commit.abandon(path)
            return incremental.nothing_new(run_dir, parents, already_extracted)
        summary = chunks.read_summary(plan_dir)
        job = jobs.write_job(path, {
            "job_id": job_id, "key": key, "chunks": summary["chunks"],
            "commit_every": opts.commit_every, "labels": summary["labels"],
            "planned": summary["planned"], "plan_dead_letters": summary["first_pass_dead_letters"],
            "parent_runs": parents, "already_extracted": already_extracted,
            "source": opts.source, "created": started})
        _commit_chunk(opts, backbone, job, 0, stats, time.time() - started)
    except BaseException:
        commit.abandon(run_dir)
        raise
    return job


def _extract_chunks(options: PipelineOptions, backbone: backbones.Backbone, graphs: Graphs,
                    job: jobs.Job) -> dict[str, Any]:
    """Extract and commit every chunk not committed yet, in order; then the job's summary."""
    opts = options.view_as(ExtractOptions)
    for chunk, done in enumerate(job.committed(opts.output)):
        if done:
            continue
        run_id = jobs.chunk_run_id(job.job_id, chunk)
        run_dir, started = _run_dir(opts, run_id), time.time()
        commit.abandon(run_dir)  # what a killed attempt at this chunk left
        print(f"Extracting chunk {chunk + 1}/{job.chunks} of job {job.job_id}: "
              f"{_planned_inputs(job, chunk)} inputs → run {run_id}", flush=True)
        try:
            _run_graph(options, graphs.chunk, run_id, backbone, run_dir, job, chunk)
            stats = commit.read_stats(run_dir)
            _commit_chunk(opts, backbone, job, chunk, stats, time.time() - started)
        except BaseException:
            commit.abandon(run_dir)
            raise
    return _job_summary(opts.output, job)


def _planned_inputs(job: jobs.Job, chunk: int) -> int:
    return (sum(job.record["planned"].get(str(chunk), {}).values())
            + int(job.record["plan_dead_letters"].get(str(chunk), 0)))


def _commit_chunk(opts: ExtractOptions, backbone: backbones.Backbone, job: jobs.Job, chunk: int,
                  stats: dict[str, Any], elapsed: float) -> dict[str, Any]:
    run_id = jobs.chunk_run_id(job.job_id, chunk)
    run_dir = _run_dir(opts, run_id)
    manifest = commit.commit(run_dir, {
        "run_id": run_id, "parent_runs": job.record["parent_runs"], "source": opts.source,
        "incremental": opts.incremental,
        "already_extracted": job.record["already_extracted"] if chunk == 0 else 0,
        "job": {"id": job.job_id, "chunk": chunk, "chunks": job.chunks,
                "commit_every": job.record["commit_every"], "plan": job.path},
        "options": {"splits": opts.splits, "limit": opts.limit,
                    "resize": {"policy": opts.resize_policy,
                               "method": "bilinear, antialiased when shrinking"},
                    "decode": {"jpeg_dct_scaling_factor": imaging.DRAFT_FACTOR}},
        "views": augment.views_manifest(
            opts.augment_views, opts.mirror_views,
            augment.policy_named(opts.augment_policy, opts.mirror_views)),
        "backbone": {"name": backbone.name, "fingerprint": backbone.fingerprint,
                     "image_size": backbone.image_size, "feature_dim": backbone.feature_dim,
                     "handle": opts.backbone},
        "durations": {"total_s": round(elapsed, 2)},
        "versions": commit.library_versions()}, stats, labels=job.record["labels"],
        allow_empty=job.chunks > 1)
    _report(run_dir, manifest, elapsed)
    return manifest


def _job_summary(output: str, job: jobs.Job) -> dict[str, Any]:
    """One chunk: its run's manifest, as a one-run job always returned; several: the totals."""
    manifests = [runs.open_run(_run_dir_of(output, run_id)).manifest for run_id in job.run_ids()]
    if len(manifests) == 1:
        return manifests[0]
    counts: dict[str, dict[str, int]] = {}
    view_counts: dict[str, dict[str, int]] = {}
    letters: dict[str, int] = {}
    for manifest in manifests:
        _add_nested(counts, manifest["counts"])
        _add_nested(view_counts, manifest.get("view_counts", {}))
        for reason, n in manifest["dead_letters"].items():
            letters[reason] = letters.get(reason, 0) + n
    total = {name: sum(m[name] for m in manifests) for name in ("inputs", "accepted", "rejected")}
    summary = {"job_id": job.job_id, "run_id": manifests[-1]["run_id"],
               "run_ids": job.run_ids(), "chunks": job.chunks, **total, "counts": counts,
               "view_counts": view_counts, "views": manifests[0].get("views"),
               "dead_letters": letters, "labels": job.record["labels"],
               "skipped_files": manifests[0].get("skipped_files", {}),  # listed by chunk 0
               "parent_runs": job.record["parent_runs"],
               "already_extracted": job.record["already_extracted"]}
    print(f"Job {job.job_id} complete: {job.chunks} runs, {total['inputs']} inputs: "
          f"{total['accepted']} accepted, {total['rejected']} rejected {letters}")
    return summary


def _add_nested(total: dict[str, dict[str, int]], part: dict[str, dict[str, int]]) -> None:
    for split, per_key in part.items():
        for key, n in per_key.items():
            total.setdefault(split, {})[key] = total.get(split, {}).get(key, 0) + n


def _run_dir_of(output: str, run_id: str) -> str:
    return runs.join(output.rstrip("/"), runs.RUNS_DIR, run_id)


def _already_complete(output: str, job: jobs.Job) -> dict[str, Any]:
    print(f"Nothing to extract: job {job.job_id} (the same command) already committed all its "
          f"{job.chunks} run(s) {job.run_ids()}. Add --incremental to extract only new images, "
          f"or --extract_again (or another --output) to extract everything again.")
    summary = _job_summary(output, job) if job.chunks > 1 else dict(
        runs.open_run(_run_dir_of(output, job.job_id)).manifest)
    return dict(summary, already_complete=True, extracted=0)


def _report(run_dir: str, manifest: dict[str, Any], elapsed: float) -> None:
    per_split = {s: sum(c.values()) for s, c in manifest["counts"].items()}
    job = manifest.get("job", {})
    chunk = f" (chunk {job['chunk'] + 1}/{job['chunks']})" if job.get("chunks", 1) > 1 else ""
    print(f"Committed run {manifest['run_id']}{chunk} at {run_dir}")
    skipped = sinks.skipped_summary(manifest.get("skipped_files", {}))
    records = sum(n for per_view in manifest.get("view_counts", {}).values()
                  for n in per_view.values())
    views = records - manifest["accepted"]
    print(f"  {manifest['inputs']} inputs: {manifest['accepted']} accepted {per_split}, "
          f"{manifest['rejected']} rejected {manifest['dead_letters']}"
          + (f"; {views} views besides the images" if views > 0 else "")
          + (f"; {skipped}" if skipped else ""))
    print(f"  {elapsed:.1f} s, {manifest['inputs'] / max(elapsed, 1e-9):.1f} images/s"
          + (f" ({records / max(elapsed, 1e-9):.1f} records/s)" if views > 0 else "")
          + f", backbone {manifest['backbone']['fingerprint']}", flush=True)
