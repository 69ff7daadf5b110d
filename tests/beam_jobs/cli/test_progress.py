"""Progress lines on local runners, read from the extract job's Beam counters while it runs."""

from __future__ import annotations

import io
import os
import re
import time

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_jobs.cli import progress


class _SlowRecords(beam.DoFn):
    def __init__(self):
        self._records = Metrics.counter(progress.NAMESPACE, progress.RECORDS)
        self._rejected = Metrics.counter(progress.NAMESPACE, "decode_rejected")

    def process(self, i):
        time.sleep(0.02)
        if i % 10 == 0:
            self._rejected.inc()
        else:
            self._records.inc()
        yield i


def _run_slow_pipeline(*flags: str, planned: int = 0, stream=None) -> list[str]:
    """60 inputs: with `planned`, a plan reports the total and that `planned` of them were
    rejected before the second pass (which then handles the other 60 - planned)."""
    stream = stream or io.StringIO()
    p = beam.Pipeline(argv=list(flags))
    second_pass = p | beam.Create(range(60 - planned))
    if planned:
        inputs = p | "Inputs" >> beam.Create(range(60))
        letters = p | "Letters" >> beam.Create(range(planned))
        reported = (inputs, letters) | progress.ReportPlan()
        second_pass = second_pass | progress.AfterPlan(reported)
    _ = second_pass | beam.ParDo(_SlowRecords())
    progress.run_pipeline(p, enabled=True, interval_s=0.2, stream=stream)
    return stream.getvalue().splitlines()


def _done(line: str) -> int:
    if "planning:" in line:
        return 0
    return int(re.search(r"extract\S*:? +(?:\d+%\|[^|]*\| )?([\d,]+)", line).group(1)
               .replace(",", ""))


def test_progress_lines_follow_a_running_in_process_job():
    lines = _run_slow_pipeline()
    assert any(0 < _done(line) < 60 for line in lines), lines  # seen mid-bundle, not at the end
    assert _done(lines[-1]) == 60 and "dead letters 6" in lines[-1]
    assert all(a <= b for a, b in zip(map(_done, lines), map(_done, lines[1:])))


def test_planned_total_gives_done_of_total_and_an_eta():
    lines = _run_slow_pipeline(planned=6)
    assert lines[-1].startswith("extract: 60/60 images (100.0%)"), lines
    assert "dead letters 12" in lines[-1]  # 6 planned + 6 in the second pass, each once
    assert any(re.search(r"/60 images \(\d+\.\d%\) .* ETA \d+ s$", line) for line in lines)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_gets_a_bar_redrawn_in_place_and_one_newline_at_the_end(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")  # the bar fits the terminal: make this one 100 wide
    terminal = _Terminal()
    _run_slow_pipeline(planned=6, stream=terminal)
    drawn = terminal.getvalue()
    assert drawn.count("\n") == 1 and drawn.endswith("\n") and drawn.count("\r") > 2, drawn
    last = drawn.rstrip("\n").rsplit("\r", 1)[-1].rstrip()
    assert re.match(r"extract 100%\|█{24}\| 60/60 images  [\d.]+ images/s  dead letters 12$",
                    last), last


def test_snapshot_line_and_bar_show_total_rate_dead_letters_and_eta():
    now = progress.Snapshot(read=500, done=200, dead_letters=20, total=1000, rate=20.0)
    assert now.line() == ("extract: 200/1,000 images (20.0%)  20.0 images/s  dead letters 20  "
                          "ETA 40 s")
    assert now.bar(200) == ("extract  20%|████▊                   | 200/1,000 images  "
                            "20.0 images/s  dead letters 20  ETA 40 s")
    assert len(now.bar(40)) == 39  # never wider than the terminal (no wrapped lines)
    planning = progress.Snapshot(read=300, done=0, dead_letters=0, total=None, rate=0.0)
    assert planning.line() == "extract: planning: 300 images read"
    unknown = progress.Snapshot(read=300, done=10, dead_letters=0, total=None, rate=10.0)
    assert unknown.line() == "extract: 10 images done  10.0 images/s  dead letters 0"


def test_counters_and_gauges_make_done_without_counting_a_rejection_twice():
    counters = {"records": 50, "decode_rejected": 3, "duplicates": 4, "conflicting_labels": 2,
                "images_read": 120, "gauge:images_total": 70, "gauge:rejected_in_planning": 6}
    now = progress.snapshot(counters)
    assert (now.done, now.dead_letters, now.total) == (59, 9, 70)
    before_plan = progress.snapshot({"records": 0, "duplicates": 4, "images_read": 30})
    assert (before_plan.done, before_plan.total) == (4, None)


def test_rate_is_measured_from_the_plan_to_the_last_image_done():
    meter = progress.RateMeter(now=0.0)
    assert meter.update(10.0, 0, planned=False) == 0.0  # planning: no rate yet
    meter.update(20.0, 6, planned=True)  # the plan arrives with 6 rejections at once
    assert meter.update(30.0, 106, planned=True) == 10.0
    assert meter.update(90.0, 106, planned=True) == 10.0  # the job's tail does not dilute it


def test_no_progress_when_turned_off_or_on_remote_runners():
    assert progress.wanted(no_progress=False) and not progress.wanted(no_progress=True)
    with progress.report_progress("DataflowRunner", enabled=True) as printer:
        assert printer is None
    with progress.report_progress("DirectRunner", enabled=False) as printer:
        assert printer is None


def test_a_log_never_repeats_the_final_line():
    counters = {progress.RECORDS: 5}
    stream = io.StringIO()
    printer = progress.ProgressPrinter(lambda: dict(counters), interval_s=60, stream=stream)
    printer.emit()
    printer.emit(final=True)  # nothing changed since the last interval: no second copy
    counters[progress.RECORDS] = 7
    printer.emit(final=True)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[0] != lines[1], lines


def test_bar_is_as_wide_as_the_terminal_it_is_drawn_on_not_stdouts(monkeypatch):
    import fcntl
    import pty
    import struct
    import termios

    monkeypatch.delenv("COLUMNS", raising=False)
    leader, follower = pty.openpty()
    try:
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 61, 0, 0))
        with os.fdopen(os.dup(follower), "w") as narrow:  # stderr on a 61-column terminal
            assert progress.terminal_columns(narrow) == 61
        with open(os.devnull, "w") as not_a_terminal:
            assert progress.terminal_columns(not_a_terminal) == 100
        assert progress.terminal_columns(io.StringIO()) == 100  # no file descriptor at all
        monkeypatch.setenv("COLUMNS", "72")  # what the user asked for wins, as in shutil
        assert progress.terminal_columns(io.StringIO()) == 72
    finally:
        os.close(leader)
        os.close(follower)
