"""Listing a folder source of many tiny files: the pipeline's listing vs a driver-side os.walk.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/folder_listing.py --files=100000

Makes N tiny PNG files under /tmp (10 class folders, some nested), then times, side by side:
  baseline  os.walk + extension filter in one Python process (what the source must not do:
            it only works on a local disk and holds every name in the driver);
  match     FileSystems.match(<root>/*/**), the call fileio.MatchFiles makes;
  pipeline  the folder source's listing stage in a Beam pipeline (MatchFiles → select inputs
            → count), DirectRunner;
and deletes the files afterwards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems

from beam_jobs.sources.folder import _ToCandidate, is_input, relative_parts


def make_files(root: str, count: int, classes: int = 10) -> None:
    png = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108000000003a7e9b55"
                        "0000000a49444154789c6360000000020001e221bc330000000049454e44ae426082")
    for label in range(classes):
        os.makedirs(os.path.join(root, f"class{label}", "nested"), exist_ok=True)
    for i in range(count):
        label = i % classes
        sub = "nested/" if i % 7 == 0 else ""
        with open(os.path.join(root, f"class{label}", f"{sub}{i:07d}.PNG" if i % 5 == 0
                               else f"{sub}{i:07d}.png"), "wb") as f:
            f.write(png)


def baseline_walk(root: str) -> int:
    found = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if is_input(relative_parts(root + "/", os.path.join(folder, name))):
                found += 1
    return found


def filesystems_match(root: str) -> int:
    return len(FileSystems.match([FileSystems.join(root + "/", "*", "**")])[0].metadata_list)


def beam_listing(root: str) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        with beam.Pipeline() as p:
            (p | fileio.MatchFiles(FileSystems.join(root + "/", "*", "**"))
             | beam.ParDo(_ToCandidate(root + "/"))
             | beam.combiners.Count.Globally()
             | beam.io.WriteToText(os.path.join(scratch, "count"), shard_name_template=""))
        with open(os.path.join(scratch, "count")) as f:
            return int(f.read())


def timed(fn, root: str) -> tuple[float, int]:
    started = time.perf_counter()
    n = fn(root)
    return time.perf_counter() - started, n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=100_000)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="tv-listing-", dir="/tmp")
    try:
        started = time.perf_counter()
        make_files(root, args.files)
        print(f"made {args.files} files in {time.perf_counter() - started:.1f} s under {root}")
        results = {name: timed(fn, root) for name, fn in (
            ("baseline os.walk", baseline_walk), ("FileSystems.match", filesystems_match),
            ("Beam MatchFiles pipeline", beam_listing))}
        base = results["baseline os.walk"][0]
        for name, (seconds, n) in results.items():
            print(f"{name:26s} {seconds:7.2f} s  {n:7d} files  {n / seconds:9.0f} files/s  "
                  f"x{seconds / base:.2f} of baseline")
    finally:
        shutil.rmtree(root, ignore_errors=True)
        print(f"deleted {root}: {not os.path.exists(root)}")


if __name__ == "__main__":
    main()
