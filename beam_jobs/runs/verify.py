"""What a run's files actually hold, counted before the commit trusts its tallies.

The tallies (`_stats.json`) are counted from the data inside the pipeline; the files are what
the sinks managed to write.  A runner that drops sink output (Beam's DaskRunner writes 0-byte
shards and still reports DONE) or a disk that fills up would leave the two apart, and a run
committed on the tallies alone would promise rows it does not hold.  Counting is cheap: Parquet
footers give row counts without reading a value, TFRecord framing gives record counts without
parsing a proto, dead letters are lines.
"""

from __future__ import annotations

import struct
from typing import Any

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_jobs.cli.errors import UserError
from beam_jobs.runs import read as runs
from schemas import record

_READ = 1 << 20


def _files(pattern: str) -> list[str]:
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def parquet_rows(path: str) -> int:
    """Rows in one Parquet file, from its footer only."""
    import pyarrow.parquet as pq

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return pq.ParquetFile(f).metadata.num_rows


def _skip(f, n: int) -> int:
    """Read past n bytes of a (decompressing) stream; how many there were."""
    seen = 0
    while seen < n:
        chunk = f.read(min(_READ, n - seen))
        if not chunk:
            break
        seen += len(chunk)
    return seen


def tfrecord_records(path: str) -> int:
    """Records in one GZIP TFRecord file, by walking the framing (u64 length, u32 crc,
    payload, u32 crc) through a streaming decompressor: no file is held in memory."""
    count = 0
    with FileSystems.open(path, compression_type=CompressionTypes.GZIP) as f:
        while True:
            header = f.read(12)
            if not header:
                return count
            if len(header) < 12:
                raise ValueError(f"record header cut short after {count} records")
            (length,) = struct.unpack("<Q", header[:8])
            if _skip(f, length + 4) != length + 4:
                raise ValueError(f"record {count} cut short")
            count += 1


def dead_letter_lines(run_dir: str) -> int:
    total = 0
    for path in _files(runs.join(run_dir, runs.DEAD_LETTERS_DIR, "*.jsonl")):
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            total += sum(1 for line in f.read().splitlines() if line.strip())
    return total


def _count(counter, path: str, problems: list[str]) -> int:
    try:
        return counter(path)
    except Exception as err:  # noqa: BLE001 - an unreadable shard is itself the finding
        problems.append(f"{path} cannot be read ({type(err).__name__}: {err})")
        return 0


def on_disk(run_dir: str) -> tuple[dict[str, dict[str, int]], list[str]]:
    """({"tfrecord"|"parquet": {split: rows}, "dead_letters": {"lines": n}}, unreadable files)."""
    problems: list[str] = []
    found: dict[str, dict[str, int]] = {"tfrecord": {}, "parquet": {}}
    for split in record.SPLITS:
        found["tfrecord"][split] = sum(
            _count(tfrecord_records, path, problems)
            for path in _files(runs.join(run_dir, f"{split}-*-of-*.tfrecord.gz")))
        found["parquet"][split] = sum(
            _count(parquet_rows, path, problems)
            for path in _files(runs.join(run_dir, runs.PARQUET_DIR, f"{split}-*-of-*.parquet")))
    found["dead_letters"] = {"lines": dead_letter_lines(run_dir)}
    return found, problems


def expected_records(tallies: dict[str, Any]) -> dict[str, int]:
    """Records per split that the shards must hold: images and their views (`view_counts`),
    or the images alone for tallies written before views existed."""
    per_view = tallies.get("view_counts")
    counts = per_view if per_view is not None else tallies["counts"]
    return {split: sum(counts.get(split, {}).values()) for split in record.SPLITS}


def _images_match_originals(tallies: dict[str, Any], problems: list[str]) -> None:
    """The images counted per label must be the view 0 records counted per view."""
    for split, per_view in (tallies.get("view_counts") or {}).items():
        images = sum(tallies["counts"].get(split, {}).values())
        originals = per_view.get(str(record.ORIGINAL_VIEW), 0)
        if images != originals:
            problems.append(f"{split} counts {images} images but {originals} view "
                            f"{record.ORIGINAL_VIEW} records")


def check_on_disk(run_dir: str, stats: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Refuse (UserError naming each difference) unless the files hold what the tallies say."""
    found, problems = on_disk(run_dir)
    expected = expected_records(stats)
    _images_match_originals(stats, problems)
    for fmt in ("tfrecord", "parquet"):
        for split in record.SPLITS:
            if found[fmt][split] != expected[split]:
                problems.append(f"{split} {fmt} shards hold {found[fmt][split]} records, "
                                f"the tallies {expected[split]}")
    letters = sum(stats["dead_letters"].values())
    if found["dead_letters"]["lines"] != letters:
        problems.append(f"dead letters hold {found['dead_letters']['lines']} lines, the "
                        f"tallies {letters}")
    if problems:
        raise UserError(f"The files of {run_dir} do not hold what the job counted: "
                        f"{'; '.join(problems)}. The run is not committed; the runner may drop "
                        f"sink output (see docs/runners.md) or the disk may be full.")
    return found
