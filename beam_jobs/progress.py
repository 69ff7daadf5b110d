"""A progress line for long extract jobs on local runners, computed from Beam metrics.

    extract: 1,536/6,000 images (25.6%)  81.3 images/s  dead letters 4  ETA 54 s

The extract DoFns count every outcome with `Metrics.counter("extract", …)`; those counters are
the job's accounting and, on Dataflow or Flink, what the runner's UI shows. On the DirectRunner
(Beam's FnApiRunner) `PipelineResult.metrics()` exists only once the job is over, so locally we
read the same counters as each bundle reports them to the runner: `BundleMetricsTap` observes
the per-bundle monitoring infos (the data `result.metrics()` is built from) and a thread prints a
line at a steady interval. Optional: with no TTY, `--no_progress`, or a runner it cannot observe,
nothing is printed and the job runs exactly the same.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

log = logging.getLogger(__name__)

NAMESPACE = "extract"
READ = "images_read"
RECORDS = "records"  # images that became a record (inference done)
DEAD_LETTER_COUNTERS = ("decode_rejected", "duplicates", "conflicting_labels", "inference_failed")
TOTAL_GAUGE = "images_total"  # a source that knows its size up front may set this gauge
LOCAL_RUNNERS = ("DirectRunner", "SwitchingDirectRunner", "FnApiRunner", "BundleBasedDirectRunner")


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Counter values at one moment, and the line they make."""

    read: int
    records: int
    dead_letters: int
    total: int | None
    elapsed_s: float

    @property
    def done(self) -> int:
        return self.records + self.dead_letters

    def line(self) -> str:
        rate = self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0
        total = self.total
        if total:
            head = f"{self.done:,}/{total:,} images ({100 * self.done / total:.1f}%)"
        else:
            head = f"{self.done:,} images done ({self.read:,} read)"
        parts = [f"extract: {head}", f"{rate:.1f} images/s", f"dead letters {self.dead_letters:,}"]
        if total and rate > 0 and self.done < total:
            parts.append(f"ETA {_duration((total - self.done) / rate)}")
        return "  ".join(parts)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class BundleMetricsTap:
    """Sums the user counters the local FnApiRunner's bundles report, finished or in flight.

    The FnApiRunner folds bundle results into `result.metrics()` only when the whole job ends,
    and a stage's input is often one big bundle. For this `with` block only, the tap wraps
    `BundleManager.process_bundle` (each finished bundle's monitoring infos) and asks the
    runner's own `ProgressRequester` to poll running bundles (their counters so far), whether
    the worker is in-process or a subprocess.
    """

    def __init__(self, poll_s: float = 1.0) -> None:
        self._poll_s = poll_s
        self._lock = threading.Lock()
        self._finished: dict[str, int] = {}
        self._in_flight: dict[str, dict[str, int]] = {}
        self._done_ids: set[str] = set()
        self._gauges: dict[str, int] = {}
        self._watched: dict[str, Any] = {}  # in-process bundles: instruction id → processor cache

    def _read(self, monitoring_infos: Any) -> dict[str, int]:
        from apache_beam.runners.portability import portable_metrics

        counters, _, gauges, _, _ = portable_metrics.from_monitoring_infos(monitoring_infos, True)
        found: dict[str, int] = {}
        for key, value in counters.items():
            if key.metric.namespace == NAMESPACE:
                found[key.metric.name] = found.get(key.metric.name, 0) + int(value)
        for key, gauge in gauges.items():
            if key.metric.namespace == NAMESPACE:
                self._gauges[key.metric.name] = int(gauge.value)
        return found

    def bundle_finished(self, instruction_id: str, monitoring_infos: Any) -> None:
        found = self._read(monitoring_infos)
        with self._lock:
            self._done_ids.add(instruction_id)
            self._in_flight.pop(instruction_id, None)
            for name, value in found.items():
                self._finished[name] = self._finished.get(name, 0) + value

    def bundle_progress(self, instruction_id: str, monitoring_infos: Any) -> None:
        found = self._read(monitoring_infos)
        with self._lock:
            if instruction_id not in self._done_ids:
                self._in_flight[instruction_id] = found

    def _poll_in_process(self) -> None:
        """The in-process worker runs a bundle on the runner's own thread, so nobody can ask
        it for progress; read its live bundle processor's counters directly instead."""
        with self._lock:
            watched = list(self._watched.items())
        for instruction_id, cache in watched:
            processor = cache.lookup(instruction_id)
            if processor is not None:
                self.bundle_progress(instruction_id, processor.monitoring_infos())

    def watch(self, instruction_id: str, cache: Any) -> None:
        with self._lock:
            self._watched[instruction_id] = cache

    def unwatch(self, instruction_id: str) -> None:
        with self._lock:
            self._watched.pop(instruction_id, None)

    def counters(self) -> dict[str, int]:
        try:
            self._poll_in_process()
        except Exception:
            log.debug("could not poll the in-process bundle", exc_info=True)
        with self._lock:
            total = dict(self._finished)
            for found in self._in_flight.values():
                for name, value in found.items():
                    total[name] = total.get(name, 0) + value
            total.update({f"gauge:{k}": v for k, v in self._gauges.items()})
            return total

    @contextlib.contextmanager
    def installed(self) -> Iterator[bool]:
        """Yields whether the tap could be installed (False on an unexpected Beam version)."""
        try:
            from apache_beam.runners.portability.fn_api_runner import fn_runner, worker_handlers
            original = fn_runner.BundleManager.process_bundle
            requester = fn_runner.ProgressRequester
            embedded = worker_handlers.EmbeddedWorkerHandler
            original_push = embedded.push
        except (ImportError, AttributeError):
            yield False
            return
        tap = self

        def process_bundle(manager, *args, **kwargs):
            result, splits = original(manager, *args, **kwargs)
            try:
                tap.bundle_finished(result.instruction_id, result.process_bundle.monitoring_infos)
            except Exception:
                log.debug("could not read bundle metrics", exc_info=True)
            return result, splits

        class PollingRequester(requester):  # type: ignore[misc, valid-type]
            def __init__(self, worker_handler, instruction_id, frequency, callback=None):
                def on_progress(progress):
                    tap.bundle_progress(instruction_id, progress.monitoring_infos)
                    if callback is not None:
                        callback(progress)

                super().__init__(worker_handler, instruction_id, frequency or tap._poll_s,
                                 callback=on_progress)

        def push(handler, request):
            if request.WhichOneof("request") != "process_bundle":
                return original_push(handler, request)
            tap.watch(request.instruction_id, handler.bundle_processor_cache)
            try:
                return original_push(handler, request)
            finally:
                tap.unwatch(request.instruction_id)

        fn_runner.BundleManager.process_bundle = process_bundle  # type: ignore[assignment, method-assign]
        fn_runner.ProgressRequester = PollingRequester  # type: ignore[misc]
        embedded.push = push  # type: ignore[assignment, method-assign]
        try:
            yield True
        finally:
            fn_runner.BundleManager.process_bundle = original  # type: ignore[assignment, method-assign]
            fn_runner.ProgressRequester = requester  # type: ignore[misc]
            embedded.push = original_push  # type: ignore[assignment, method-assign]


def snapshot(counters: dict[str, int], elapsed_s: float, total: int | None = None) -> Snapshot:
    return Snapshot(read=counters.get(READ, 0), records=counters.get(RECORDS, 0),
                    dead_letters=sum(counters.get(name, 0) for name in DEAD_LETTER_COUNTERS),
                    total=total or counters.get(f"gauge:{TOTAL_GAUGE}") or None,
                    elapsed_s=elapsed_s)


class ProgressPrinter(threading.Thread):
    """Prints `snapshot(read_counters())` every `interval_s` seconds until stopped."""

    def __init__(self, read_counters: Callable[[], dict[str, int]], interval_s: float,
                 stream: TextIO, total: int | None = None) -> None:
        super().__init__(name="extract-progress", daemon=True)
        self._read_counters = read_counters
        self._interval_s = interval_s
        self._stream = stream
        self._total = total
        self._halt = threading.Event()
        self.started_at = time.time()
        self.lines: list[str] = []
        self._last_done = 0
        self._flowing_s = 0.0

    def run(self) -> None:
        while not self._halt.wait(self._interval_s):
            self.emit()

    def emit(self) -> None:
        counters = self._read_counters()
        now = snapshot(counters, time.time() - self.started_at, self._total)
        if now.done != self._last_done:  # the rate covers the time images were flowing only,
            self._last_done, self._flowing_s = now.done, now.elapsed_s  # not the job's tail
        line = dataclasses.replace(now, elapsed_s=self._flowing_s).line()
        self.lines.append(line)
        print(line, file=self._stream, flush=True)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)
        if self.lines:
            self.emit()  # the final tally, so the last line is never a stale one


def is_local_runner(runner: Any) -> bool:
    name = runner if isinstance(runner, str) else type(runner).__name__
    return (name or "DirectRunner").split(".")[-1] in LOCAL_RUNNERS


@contextlib.contextmanager
def report_progress(runner: Any, *, enabled: bool = True, interval_s: float = 10.0,
                    stream: TextIO | None = None, total: int | None = None
                    ) -> Iterator[ProgressPrinter | None]:
    """Around `pipeline.run().wait_until_finish()`: print progress while the job runs, where it
    is wanted (enabled, a terminal) and observable (a local runner)."""
    stream = stream or sys.stderr
    if not enabled or not is_local_runner(runner) or interval_s <= 0:
        yield None
        return
    tap = BundleMetricsTap(poll_s=max(0.2, min(interval_s / 2, 2.0)))
    with tap.installed() as ok:
        if not ok:
            yield None
            return
        printer = ProgressPrinter(tap.counters, interval_s, stream, total)
        printer.start()
        try:
            yield printer
        finally:
            printer.stop()


def wanted(no_progress: bool, stream: TextIO | None = None) -> bool:
    """Progress lines only for a person watching: never into a pipe, a file or a CI log."""
    stream = stream or sys.stderr
    return not no_progress and bool(getattr(stream, "isatty", lambda: False)())


def run_pipeline(pipeline: Any, *, enabled: bool, interval_s: float = 10.0,
                 stream: TextIO | None = None) -> Any:
    """`pipeline.run().wait_until_finish()` with progress lines where wanted; raises like the
    `with beam.Pipeline()` block it replaces (a failed job raises from wait_until_finish)."""
    runner = pipeline.runner
    with report_progress(runner, enabled=enabled, interval_s=interval_s, stream=stream):
        result = pipeline.run()
        result.wait_until_finish()
    return result
