"""Beam metrics of a job running on the local FnApiRunner, read while it runs.

The FnApiRunner builds `PipelineResult.metrics()` only once the whole job is over; the progress
line (`beam_jobs.cli.progress`) needs the counters and gauges of bundles as they finish, and of
bundles still running.  `BundleMetricsTap` observes them for the length of a `with` block.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

NAMESPACE = "extract"


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
