"""One sub-folder per class: `<root>/<label>/**/<image>`; listing runs in the pipeline.

Nested folders are allowed (the label is the first folder under the root).  Files are inputs
when their extension (any case) is an image's, or a document users take for one (SVG, PDF,
HEIC…): those fail decoding and are reported, so nothing that looks like an image is silently
dropped.  Hidden files and folders, files at the root and other files (`README.txt`,
`labels.csv`) are not inputs and are not counted.
"""

from __future__ import annotations

import posixpath
from typing import Iterator

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_jobs.errors import UserError
from beam_jobs.sources import KeepFirst
from beam_jobs.sources.reading import Candidate, ReadCandidate

IMAGE_EXTENSIONS = frozenset((
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".webp", ".bmp", ".dib", ".tif",
    ".tiff", ".ppm", ".pgm", ".pbm", ".pnm", ".ico", ".tga",
    # documents people take for images: read, then reported as not_an_image
    ".svg", ".svgz", ".pdf", ".heic", ".heif", ".avif", ".jxl", ".eps"))


def relative_parts(root: str, path: str) -> list[str]:
    rel = path[len(root):].lstrip("/") if path.startswith(root) else posixpath.basename(path)
    return [p for p in rel.replace("\\", "/").split("/") if p]


def is_input(parts: list[str]) -> bool:
    """In a class folder, not hidden at any level, with an image's extension (any case)."""
    if len(parts) < 2 or any(p.startswith(".") for p in parts):
        return False
    return posixpath.splitext(parts[-1])[1].lower() in IMAGE_EXTENSIONS


class _ToCandidate(beam.DoFn):
    def __init__(self, root: str):
        self._root = root
        self._skipped = Metrics.counter("extract", "files_skipped")

    def process(self, metadata: FileMetadata) -> Iterator[Candidate]:
        parts = relative_parts(self._root, metadata.path)
        if is_input(parts):
            yield Candidate(uri=metadata.path, label=parts[0])
        else:
            self._skipped.inc()


class ReadFolder(beam.PTransform):
    """Matches `<root>/*/**` with fileio so listing scales beyond the driver's memory."""

    def __init__(self, root: str, limit=None):
        super().__init__()
        self._root = root.rstrip("/") + "/"
        self._limit = limit

    def expand(self, pbegin):
        if not FileSystems.exists(self._root.rstrip("/")):
            raise UserError(f"The folder {self._root} does not exist.")
        return (pbegin
                | "Match" >> fileio.MatchFiles(FileSystems.join(self._root, "*", "**"),
                                               empty_match_treatment="ALLOW")
                | "Select" >> beam.ParDo(_ToCandidate(self._root))
                | "Limit" >> KeepFirst(self._limit)
                | "Spread" >> beam.Reshuffle()
                | "Read" >> beam.ParDo(ReadCandidate()))
