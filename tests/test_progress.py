"""Progress lines on local runners, read from the extract job's Beam counters while it runs."""

from __future__ import annotations

import io
import re
import time

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_jobs import progress


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


def _run_slow_pipeline(*flags: str) -> list[str]:
    stream = io.StringIO()
    p = beam.Pipeline(argv=list(flags))
    _ = p | beam.Create(range(60)) | beam.ParDo(_SlowRecords())
    progress.run_pipeline(p, enabled=True, interval_s=0.2, stream=stream)
    return stream.getvalue().splitlines()


def _done(line: str) -> int:
    return int(re.match(r"extract: ([\d,]+)", line).group(1).replace(",", ""))


def test_progress_lines_follow_a_running_in_process_job():
    lines = _run_slow_pipeline()
    assert any(0 < _done(line) < 60 for line in lines), lines  # seen mid-bundle, not at the end
    assert _done(lines[-1]) == 60 and "dead letters 6" in lines[-1]
    assert all(a <= b for a, b in zip(map(_done, lines), map(_done, lines[1:])))


def test_snapshot_line_shows_total_rate_dead_letters_and_eta():
    line = progress.Snapshot(read=500, records=180, dead_letters=20, total=1000,
                             elapsed_s=10.0).line()
    assert line == ("extract: 200/1,000 images (20.0%)  20.0 images/s  dead letters 20  "
                    "ETA 40 s")
    unknown = progress.Snapshot(read=300, records=10, dead_letters=0, total=None, elapsed_s=1)
    assert unknown.line() == "extract: 10 images done (300 read)  10.0 images/s  dead letters 0"


def test_no_progress_without_a_terminal_or_on_remote_runners():
    assert not progress.wanted(no_progress=False, stream=io.StringIO())
    with progress.report_progress("DataflowRunner", enabled=True) as printer:
        assert printer is None
    with progress.report_progress("DirectRunner", enabled=False) as printer:
        assert printer is None
