"""Images back from a record's uri, for the errors grid: files where readable, IDX rows by index.

A uri is where the extract job found the image.  Paths and `gs://…` objects are read through
Beam's `FileSystems` and decoded like the extract job decodes (Pillow); `idx:<part>#<row>`
names a row of an IDX file, found again through the run manifest's `idx:<folder>` source (the
file is read once per part and kept).  Anything else (`file.tfrecord#17`, a deleted file) has
no picture: the caller draws an empty tile with the uri instead.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np

from beam_jobs.runs.read import Run

log = logging.getLogger(__name__)
IDX_PREFIX = "idx:"


class ThumbnailLoader:
    """uri → uint8 [H, W, 3] or None; IDX parts are cached, since mistakes share files."""

    def __init__(self, runs: Sequence[Run]):
        self._idx_folders = sorted({run.manifest.get("source", "")[len(IDX_PREFIX):]
                                    for run in runs
                                    if str(run.manifest.get("source", "")).startswith(IDX_PREFIX)})
        self._idx_cache: dict[str, Optional[np.ndarray]] = {}

    def load(self, uri: str) -> Optional[np.ndarray]:
        try:
            if uri.startswith(IDX_PREFIX):
                return self._idx_row(uri)
            return self._file(uri)
        except Exception as err:  # noqa: BLE001 - a picture is a courtesy; never fail the run
            log.info("no thumbnail for %s: %s", uri, err)
            return None

    def _file(self, uri: str) -> Optional[np.ndarray]:
        from apache_beam.io.filesystems import FileSystems

        from beam_jobs.images.decode import decode_rgb

        if "#" in uri or not FileSystems.exists(uri):
            return None
        with FileSystems.open(uri, compression_type="uncompressed") as f:
            return decode_rgb(f.read())

    def _idx_row(self, uri: str) -> Optional[np.ndarray]:
        part, _, row = uri[len(IDX_PREFIX):].partition("#")
        images = self._idx_part(part)
        if images is None or not row.isdigit() or int(row) >= len(images):
            return None
        pixels = images[int(row)]
        return np.repeat(pixels[..., None], 3, axis=-1) if pixels.ndim == 2 else pixels

    def _idx_part(self, part: str) -> Optional[np.ndarray]:
        if part not in self._idx_cache:
            from beam_jobs.sources.idx import find_parts, read_bytes, read_idx

            self._idx_cache[part] = None
            for folder in self._idx_folders:
                found = find_parts(folder).get(part)
                if found:
                    self._idx_cache[part] = read_idx(read_bytes(found[0]))
                    break
        return self._idx_cache[part]
