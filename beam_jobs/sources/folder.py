"""One sub-folder per class: `<root>/<label>/**/<image>`; listing runs in the pipeline.

Nested folders are allowed (the label is the first folder under the root).  Files are inputs
when their extension (any case) is one Pillow can open — Pillow is asked, so a new plugin or
codec (JPEG 2000, MPO, AVIF…) is taken without a list to keep here — or a document users take
for an image (SVG, PDF, HEIC…): those fail decoding and are reported, so nothing that looks
like an image is silently dropped.  Every other file under the root (hidden files, files in
hidden folders, files at the root, `README.txt`) is not an input; `SkippedFiles` counts them by
`skipped_file_key` so the manifest and the job's summary say what was left out.
"""

from __future__ import annotations

import functools
import posixpath
from typing import Iterator

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_jobs.cli.errors import UserError
from beam_jobs.sources.base import KeepFirst, OnlyWanted
from beam_jobs.sources.reading import Candidate, ReadCandidate

# Documents people take for images: read, then reported as not_an_image by the decoder.
MISTAKEN_FOR_IMAGES = frozenset((".svg", ".svgz", ".pdf", ".heic", ".heif", ".avif", ".jxl",
                                 ".eps"))
# Formats Pillow registers an extension for but opens through another plugin's factory.
_OPENED_BY_ANOTHER_PLUGIN = frozenset(("MPO",))
NO_EXTENSION = "(none)"
HIDDEN, AT_ROOT = " (hidden)", " (at the root)"


@functools.lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    """Every extension Pillow can open here (its plugins and codecs as installed), lower case,
    plus the documents people mistake for images."""
    from PIL import Image

    Image.init()
    readable = {ext.lower() for ext, fmt in Image.registered_extensions().items()
                if fmt in Image.OPEN or fmt in _OPENED_BY_ANOTHER_PLUGIN}
    return frozenset(readable | MISTAKEN_FOR_IMAGES)


def relative_parts(root: str, path: str) -> list[str]:
    rel = path[len(root):].lstrip("/") if path.startswith(root) else posixpath.basename(path)
    return [p for p in rel.replace("\\", "/").split("/") if p]


def _extension(name: str) -> str:
    return posixpath.splitext(name)[1].lower()


def is_input(parts: list[str]) -> bool:
    """In a class folder, not hidden at any level, with an image's extension (any case)."""
    if len(parts) < 2 or any(p.startswith(".") for p in parts):
        return False
    return _extension(parts[-1]) in image_extensions()


def skipped_file_key(parts: list[str]) -> str:
    """How a file that is not an input is counted in `skipped_files`.

    Its lower-cased extension (`.txt`); a hidden name without one is its own key (`.DS_Store`);
    any other name without one is `(none)`.  A file with an image's extension says why it was
    left out: `.png (hidden)` (the file or a folder above it is hidden), `.png (at the root)`.
    """
    name = parts[-1]
    ext = _extension(name)
    key = ext or (name if name.startswith(".") else NO_EXTENSION)
    if ext in image_extensions():
        key += HIDDEN if any(p.startswith(".") for p in parts) else AT_ROOT
    return key


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


def _root_of(root: str) -> str:
    if not FileSystems.exists(root.rstrip("/")):
        raise UserError(f"The folder {root} does not exist.")
    return root.rstrip("/") + "/"


class ReadFolder(beam.PTransform):
    """Matches `<root>/*/**` with fileio so listing scales beyond the driver's memory."""

    def __init__(self, root: str, limit=None, uri_filter=None):
        super().__init__()
        self._root = root.rstrip("/") + "/"
        self._limit = limit
        self._uri_filter = uri_filter

    def expand(self, pbegin):
        root = _root_of(self._root)
        return (pbegin
                | "Match" >> fileio.MatchFiles(FileSystems.join(root, "*", "**"),
                                               empty_match_treatment="ALLOW")
                | "Select" >> beam.ParDo(_ToCandidate(root))
                | "Limit" >> KeepFirst(self._limit)
                | "Wanted" >> OnlyWanted(self._uri_filter)  # before any byte is read
                | "Spread" >> beam.Reshuffle()
                | "Read" >> beam.ParDo(ReadCandidate()))


def _skipped_key(metadata: FileMetadata, root: str) -> list[str]:
    parts = relative_parts(root, metadata.path)
    return [] if is_input(parts) else [skipped_file_key(parts)]


class SkippedFiles(beam.PTransform):
    """PBegin → one `skipped_file_key` per file under the root that is not an input.

    A listing of its own (names only, no bytes read) rather than a side output of `ReadFolder`,
    so the source keeps the one contract every source has: a PTransform yielding SourceImages.
    """

    def __init__(self, root: str):
        super().__init__()
        self._root = root.rstrip("/") + "/"

    def expand(self, pbegin):
        root = _root_of(self._root)
        return (pbegin
                | "Match" >> fileio.MatchFiles(FileSystems.join(root, "**"),
                                               empty_match_treatment="ALLOW")
                | "Key" >> beam.FlatMap(_skipped_key, root))
