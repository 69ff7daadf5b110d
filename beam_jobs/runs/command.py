"""tv-runs: see the runs and jobs under an extract output, and remove what killed jobs left.

    tv-runs list --output=/data/tv
    tv-runs gc --output=/data/tv --older_than=24h --dry_run
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

from beam_jobs.cli import flags
from beam_jobs.cli.errors import UserError
from beam_jobs.runs import inventory
from beam_jobs.runs import read as runs

EXAMPLE = """example:
  tv-runs list --output=/data/tv
  tv-runs gc --output=/data/tv --older_than=6h --dry_run   # what would go
  tv-runs gc --output=/data/tv                              # abandoned for 24 h or more"""
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_age(text: str) -> float:
    """`90s`, `30m`, `24h`, `7d` (or plain seconds) → seconds."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text or "")
    if not found:
        raise UserError(f"--older_than={text} is not an age like 30m, 24h or 7d.")
    return float(found.group(1)) * _UNITS[found.group(2) or "s"]


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def human_age(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= span:
            return f"{seconds / span:.1f}{unit}"
    return f"{seconds:.0f}s"


def format_table(entries: Sequence[inventory.Entry]) -> str:
    rows = [("KIND", "NAME", "STATE", "IMAGES", "VIEWS", "SIZE", "BACKBONE", "AGE", "JOB")]
    rows += [(e.kind, e.name, e.state, "-" if e.images is None else str(e.images),
              str(e.views) if e.views else "-", human_size(e.size_bytes), e.backbone or "-",
              human_age(e.age_s), e.job or "-")
             for e in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in rows)


def _parser():
    parser = flags.argument_parser("tv-runs", __doc__.split("\n")[0], EXAMPLE)
    parser.add_argument("command", choices=("list", "gc"),
                        help="list: every run and job with its state; gc: remove abandoned "
                             "folders of killed jobs (never a committed run, never a plan a "
                             "rerun can resume, never anything a live job is writing)")
    parser.add_argument("--output", required=True, help="the extract output folder (tv-extract "
                                                        "--output), any Beam filesystem")
    parser.add_argument("--older_than", default="24h",
                        help="gc: only folders untouched this long (30m, 24h, 7d; default 24h)")
    parser.add_argument("--dry_run", action="store_true", help="gc: say what would go, remove "
                                                                "nothing")
    return parser


def run(argv: Optional[Sequence[str]] = None) -> list[inventory.Entry]:
    args = flags.parse_args(_parser(), argv)
    if not runs.exists(args.output.rstrip("/")):
        raise UserError(f"--output={args.output} does not exist.")
    entries = inventory.inventory(args.output)
    if args.command == "list":
        print(format_table(entries) if entries else f"Nothing under {args.output}.")
        return entries
    doomed = inventory.collectable(entries, parse_age(args.older_than))
    if doomed:
        print(format_table(doomed))
    if not args.dry_run:
        inventory.remove(doomed)
    freed = human_size(sum(e.size_bytes for e in doomed))
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {len(doomed)} abandoned folder(s), {freed}; kept "
          f"{len(entries) - len(doomed)} (committed, resumable, in progress or younger than "
          f"{args.older_than}).")
    return doomed
