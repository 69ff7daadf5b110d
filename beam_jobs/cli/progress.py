"""Progress of an extract job: a bar in a terminal, a plain line per interval in a log.

    extract  25%|███▋           | 1,536/6,000 images  81.3 images/s  dead letters 4  ETA 54 s

The planning pass ends by setting two gauges (`ReportPlan`): `images_total`, the run's inputs
(what `manifest.json` will call inputs: accepted + rejected), and `rejected_in_planning`, the
inputs it already set aside (duplicates, unreadable, empty).  The second pass counts each
remaining input's outcome once (`records`, `decode_rejected`, `inference_failed`,
`unreadable_on_second_read`), so done = those + the planned rejections, and done reaches the
total exactly when the job ends.  All are Beam metrics in namespace `extract`: on Dataflow or
Flink they are what the runner's UI shows.  On the DirectRunner (Beam's FnApiRunner)
`PipelineResult.metrics()` exists only once the job is over, so locally we read the same
metrics as each bundle reports them to the runner: `BundleMetricsTap` observes the per-bundle
monitoring infos (the data `result.metrics()` is built from) and a thread prints at a steady
interval.  With `--no_progress` or a runner it cannot observe, nothing is printed and the job
runs exactly the same.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_jobs.cli.metrics_tap import NAMESPACE, BundleMetricsTap

log = logging.getLogger(__name__)

READ = "images_read"
RECORDS = "records"  # images that became a record (inference done)
# Outcomes of the second pass, each input counted once (the first pass's are in a gauge).
SECOND_PASS_DEAD_LETTERS = ("decode_rejected", "inference_failed", "unreadable_on_second_read")
# Before the plan is known (or in a pipeline without one) these first-pass counters show too.
FIRST_PASS_DEAD_LETTERS = ("duplicates", "conflicting_labels")
TOTAL_GAUGE = "images_total"  # the run's inputs, set by ReportPlan when planning is done
PLANNED_REJECTED_GAUGE = "rejected_in_planning"
LOCAL_RUNNERS = ("DirectRunner", "SwitchingDirectRunner", "FnApiRunner", "BundleBasedDirectRunner")
BAR_WIDTH = 24


class _SetPlanGauges(beam.DoFn):
    def __init__(self):
        self._total = Metrics.gauge(NAMESPACE, TOTAL_GAUGE)
        self._rejected = Metrics.gauge(NAMESPACE, PLANNED_REJECTED_GAUGE)

    def process(self, _, total: int, rejected: int) -> Iterator[str]:
        self._total.set(total)
        self._rejected.set(rejected)
        log.info("planned %d inputs, %d already rejected", total, rejected)
        return iter(())


class ReportPlan(beam.PTransform):
    """(inputs, first-pass dead letters) → an empty PCollection of str, once the gauges are set.

    Give the result to `AfterPlan` on the second pass: it then cannot start before the total
    is reported, on any runner (without it the local runner may count after the images).
    """

    def expand(self, pcolls):
        inputs, rejected = pcolls
        total = inputs | "CountInputs" >> beam.combiners.Count.Globally()
        planned_rejected = rejected | "CountRejected" >> beam.combiners.Count.Globally()
        return (inputs.pipeline
                | "Once" >> beam.Create([None])
                | "SetGauges" >> beam.ParDo(_SetPlanGauges(), beam.pvalue.AsSingleton(total),
                                            beam.pvalue.AsSingleton(planned_rejected))
                .with_output_types(str))


def _unchanged(element: Any, _reported: Any) -> Any:
    return element


class AfterPlan(beam.PTransform):
    """Passes elements on unchanged, once `ReportPlan`'s output exists: a side input on the
    second pass's fused stage makes every runner report the total before that stage starts."""

    def __init__(self, reported):
        super().__init__()
        self._reported = reported

    def expand(self, pcoll):
        return pcoll | beam.Map(_unchanged, beam.pvalue.AsList(self._reported))


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What the job has done at one moment, and the line it makes."""

    read: int  # images read, both passes together
    done: int  # inputs with their final outcome (a record or a dead letter)
    dead_letters: int
    total: int | None  # the run's inputs, once planning is done
    rate: float  # images/s while images were flowing

    @property
    def fraction(self) -> float | None:
        return min(1.0, self.done / self.total) if self.total else None

    def text(self) -> str:
        """`1,536/6,000 images  81.3 images/s  dead letters 4  ETA 54 s`, or while planning
        (no total yet) `planning: 1,024 images read`."""
        total = self.total
        if total is None and self.done == 0:
            return f"planning: {self.read:,} images read"
        head = f"{self.done:,}/{total:,} images" if total else f"{self.done:,} images done"
        parts = [head, f"{self.rate:.1f} images/s", f"dead letters {self.dead_letters:,}"]
        if total and self.rate > 0 and self.done < total:
            parts.append(f"ETA {_duration((total - self.done) / self.rate)}")
        return "  ".join(parts)

    def line(self) -> str:
        """The plain line a log gets, one per interval."""
        fraction = self.fraction
        percent = f" ({100 * fraction:.1f}%)" if fraction is not None else ""
        head, _, rest = self.text().partition("  ")
        return f"extract: {head}{percent}" + (f"  {rest}" if rest else "")

    def bar(self, columns: int) -> str:
        """The line a terminal gets, redrawn in place: `extract  25%|███▋      | …`."""
        fraction = self.fraction
        if fraction is None:
            return f"extract: {self.text()}"[:columns - 1]
        filled = fraction * BAR_WIDTH
        eighths = int((filled - int(filled)) * 8)
        partial = "▏▎▍▌▋▊▉"[eighths - 1] if eighths and int(filled) < BAR_WIDTH else ""
        bar = ("█" * int(filled) + partial).ljust(BAR_WIDTH)
        return f"extract {100 * fraction:3.0f}%|{bar}| {self.text()}"[:columns - 1]


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def snapshot(counters: dict[str, int], rate: float = 0.0) -> Snapshot:
    """The tallies from the metrics (gauges under `gauge:NAME`, see BundleMetricsTap)."""
    total = counters.get(f"gauge:{TOTAL_GAUGE}")
    second_pass = sum(counters.get(name, 0) for name in SECOND_PASS_DEAD_LETTERS)
    if total is None:  # still planning, or a pipeline without a plan
        dead = second_pass + sum(counters.get(name, 0) for name in FIRST_PASS_DEAD_LETTERS)
    else:
        dead = second_pass + counters.get(f"gauge:{PLANNED_REJECTED_GAUGE}", 0)
    return Snapshot(read=counters.get(READ, 0), done=counters.get(RECORDS, 0) + dead,
                    dead_letters=dead, total=total, rate=rate)


class RateMeter:
    """images/s since the second pass began (the plan's arrival), up to the last image done:
    neither the planning pass before it nor the job's tail after it (TFT, finalizing shards)
    dilutes the rate the ETA is computed from."""

    def __init__(self, now: float) -> None:
        self._created_s = now
        self._start_s, self._start_done = now, 0
        self._planned = False
        self._last_s, self._last_done = now, 0

    def update(self, now: float, done: int, planned: bool) -> float:
        if planned and not self._planned:  # restart at the plan: its rejections came at once
            self._planned, self._start_s, self._start_done = True, now, done
            self._last_s, self._last_done = now, done
        if done != self._last_done:
            self._last_s, self._last_done = now, done
        span = self._last_s - self._start_s
        if span > 0 and self._last_done > self._start_done:
            return (self._last_done - self._start_done) / span
        whole = self._last_s - self._created_s  # the plan came with the images (one bundle)
        return self._last_done / whole if whole > 0 else 0.0


class ProgressPrinter(threading.Thread):
    """Every `interval_s` seconds: a bar redrawn in place (`bar=True`, a terminal) or one plain
    line (a log file), until stopped."""

    def __init__(self, read_counters: Callable[[], dict[str, int]], interval_s: float,
                 stream: TextIO, bar: bool = False) -> None:
        super().__init__(name="extract-progress", daemon=True)
        self._read_counters = read_counters
        self._interval_s = interval_s
        self._stream = stream
        self._bar = bar
        self._halt = threading.Event()
        self._rate = RateMeter(time.time())
        self._drawn = 0
        self.lines: list[str] = []

    def run(self) -> None:
        while not self._halt.wait(self._interval_s):
            self.emit()

    def emit(self, final: bool = False) -> None:
        counters = self._read_counters()
        now = snapshot(counters)
        rate = self._rate.update(time.time(), now.done, now.total is not None)
        now = dataclasses.replace(now, rate=rate)
        if self._bar:
            text = now.bar(terminal_columns(self._stream))
            self._stream.write("\r" + text.ljust(self._drawn))
            self._drawn = len(text)
        else:
            text = now.line()
            if final and self.lines and text == self.lines[-1]:
                return  # the last interval's line already said it
            self._stream.write(text + "\n")
        self._stream.flush()
        self.lines.append(text)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)
        if self.lines:
            self.emit(final=True)  # the final tally, so the last line is never a stale one
            if self._bar:
                self._stream.write("\n")
                self._stream.flush()


def is_local_runner(runner: Any) -> bool:
    name = runner if isinstance(runner, str) else type(runner).__name__
    return (name or "DirectRunner").split(".")[-1] in LOCAL_RUNNERS


def terminal_columns(stream: TextIO, fallback: int = 100) -> int:
    """The width of the terminal the bar is drawn on (stderr), not stdout's as
    `shutil.get_terminal_size` measures: with stdout piped to a file, stderr's terminal may be
    narrower, and a bar wider than it wraps at every redraw.  `COLUMNS` wins, as in shutil."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        return os.get_terminal_size(stream.fileno()).columns or fallback
    except (AttributeError, OSError, ValueError):  # no file descriptor, or not a terminal
        return fallback


def is_terminal(stream: TextIO) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


@contextlib.contextmanager
def report_progress(runner: Any, *, enabled: bool = True, interval_s: float = 10.0,
                    stream: TextIO | None = None) -> Iterator[ProgressPrinter | None]:
    """Around `pipeline.run().wait_until_finish()`: print progress while the job runs, where it
    is wanted (enabled) and observable (a local runner); a bar only on a terminal."""
    stream = stream or sys.stderr
    if not enabled or not is_local_runner(runner) or interval_s <= 0:
        yield None
        return
    tap = BundleMetricsTap(poll_s=max(0.2, min(interval_s / 2, 2.0)))
    with tap.installed() as ok:
        if not ok:
            yield None
            return
        printer = ProgressPrinter(tap.counters, interval_s, stream, bar=is_terminal(stream))
        printer.start()
        try:
            yield printer
        finally:
            printer.stop()


def wanted(no_progress: bool) -> bool:
    """Progress unless --no_progress: a bar for a person at a terminal, plain lines in a log
    (`run_pipeline` picks which from the stream)."""
    return not no_progress


def run_pipeline(pipeline: Any, *, enabled: bool, interval_s: float = 10.0,
                 stream: TextIO | None = None) -> Any:
    """`pipeline.run().wait_until_finish()` with progress where wanted and worker processes'
    TensorFlow banners filtered; raises like the `with beam.Pipeline()` block it replaces (a
    failed job raises from wait_until_finish)."""
    from beam_jobs.cli.worker_stderr import children_stderr_filtered

    runner = pipeline.runner
    with children_stderr_filtered(), report_progress(runner, enabled=enabled,
                                                     interval_s=interval_s, stream=stream):
        result = pipeline.run()
        result.wait_until_finish()
    return result
