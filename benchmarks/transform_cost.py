"""What the tensorflow-transform analysis adds to one extract run, beside the same run without it.

    python benchmarks/transform_cost.py --repeats=3 --train=60 --test=15

Tiny IDX data and the tests' tiny backbone, so the figure is the fixed cost TFT adds to every
run (tracing the preprocessing graph, analysing, writing transform_fn) — the cost the extract
test suite pays per pipeline run.  Modes run interleaved in one process; medians printed.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
atexit.register(gc.freeze)  # tensorflow-transform's exit crash (see beam_jobs.cli)

import apache_beam as beam  # noqa: E402

from beam_jobs.extract import pipeline as extract  # noqa: E402
from beam_jobs.extract.stages import tft as transform  # noqa: E402
from tests.helpers.images import write_idx  # noqa: E402
from tests.helpers.tiny_backbone import make_tiny_backbone  # noqa: E402

ORIGINAL_EXPAND = transform.AnalyzeAndWriteTransform.expand


def without_tft(self, records):
    return records | "NoAnalysis" >> beam.Map(lambda _: None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train", type=int, default=60)
    parser.add_argument("--test", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        backbone = make_tiny_backbone(os.path.join(tmp, "backbone"))
        write_idx(os.path.join(tmp, "idx"), {"train": args.train, "t10k": args.test})
        modes = {"without TFT (baseline)": without_tft, "with TFT analysis": ORIGINAL_EXPAND}
        seconds: dict[str, list[float]] = {mode: [] for mode in modes}
        for repeat in range(args.repeats):
            for mode, expand in modes.items():
                transform.AnalyzeAndWriteTransform.expand = expand
                start = time.perf_counter()
                extract.run([f"--source=idx:{tmp}/idx", f"--output={tmp}/out{repeat}{len(mode)}",
                             f"--backbone={backbone}", "--num_shards=2"])
                seconds[mode].append(time.perf_counter() - start)
        transform.AnalyzeAndWriteTransform.expand = ORIGINAL_EXPAND
    base = statistics.median(seconds["without TFT (baseline)"])
    print(f"\n{'extract run':26s} {'median s':>9s} {'ratio':>6s}  all")
    for mode, values in seconds.items():
        median = statistics.median(values)
        print(f"{mode:26s} {median:9.2f} {median / base:6.2f}  "
              f"{', '.join(f'{v:.2f}' for v in values)}")
    print(f"TFT adds {statistics.median(seconds['with TFT analysis']) - base:.2f} s per run")


if __name__ == "__main__":
    main()
