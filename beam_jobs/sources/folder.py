"""One sub-folder per class: `<root>/<label>/**/<image>`; listing runs in the pipeline."""

from __future__ import annotations

import posixpath
from typing import Iterator

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_jobs.elements import SourceImage
from beam_jobs.errors import UserError


def _relative_parts(root: str, path: str) -> list[str]:
    rel = path[len(root):].lstrip("/") if path.startswith(root) else posixpath.basename(path)
    return [p for p in rel.split("/") if p]


class _ToSourceImage(beam.DoFn):
    def __init__(self, root: str):
        self._root = root
        self._read = Metrics.counter("extract", "images_read")

    def process(self, readable: fileio.ReadableFile) -> Iterator[SourceImage]:
        path = readable.metadata.path
        parts = _relative_parts(self._root, path)
        # Files at the root have no class, hidden files are not inputs: neither is counted.
        if len(parts) >= 2 and not any(p.startswith(".") for p in parts):
            self._read.inc()
            yield SourceImage(uri=path, label=parts[0], encoded=readable.read())


def _uri(image: SourceImage) -> str:
    return image.uri


class ReadFolder(beam.PTransform):
    """Matches `<root>/*/**` with fileio so listing scales beyond the driver's memory."""

    def __init__(self, root: str, limit=None):
        super().__init__()
        self._root = root.rstrip("/") + "/"
        self._limit = limit

    def expand(self, pbegin):
        if not FileSystems.exists(self._root.rstrip("/")):
            raise UserError(f"The folder {self._root} does not exist.")
        images = (pbegin
                  | "Match" >> fileio.MatchFiles(FileSystems.join(self._root, "*", "**"),
                                                 empty_match_treatment="ALLOW")
                  | "Spread" >> beam.Reshuffle()
                  | "Read" >> fileio.ReadMatches()
                  | "ToSourceImage" >> beam.ParDo(_ToSourceImage(self._root)))
        if isinstance(self._limit, int):
            # The first N by uri, not a random sample: a limited run is reproducible.
            images = (images
                      | "Limit" >> beam.combiners.Top.Smallest(self._limit, key=_uri)
                      | "Flatten" >> beam.FlatMap(lambda xs: xs))
        return images
