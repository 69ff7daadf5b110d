"""Decode each accepted image to uint8 RGB; bad bytes become dead letters.

Resizing to the backbone's input happens batched in `beam_jobs.inference`; here we only
check that the pixels are usable.
"""

from __future__ import annotations

from typing import Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_jobs.elements import UNREADABLE, ModelInput, SourceImage, dead_letter
from beam_jobs.imaging import DecodeError, decode_rgb
from beam_jobs.splits import DEAD_LETTER


class _Decode(beam.DoFn):
    def __init__(self, max_pixels: int):
        self._max_pixels = max_pixels
        self._decoded = Metrics.counter("extract", "decoded")
        self._rejected = Metrics.counter("extract", "decode_rejected")

    def process(self, element: tuple[str, SourceImage]) -> Iterator:
        split, image = element
        try:
            pixels = image.pixels if image.pixels is not None else decode_rgb(
                image.encoded, self._max_pixels)
        except DecodeError as err:
            self._rejected.inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER, dead_letter(image.uri, "decode", err.reason, err.detail))
            return
        if pixels.ndim != 3 or pixels.shape[-1] not in (1, 3) or 0 in pixels.shape:
            self._rejected.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(
                image.uri, "decode", UNREADABLE, f"unusable pixel shape {pixels.shape}"))
            return
        self._decoded.inc()
        yield ModelInput(image.image_id, image.uri, image.label, split, pixels)


class DecodeImages(beam.PTransform):
    """(split, SourceImage) → ModelInput uint8 [H,W,C]; failures on the `dead_letter` tag."""

    def __init__(self, max_pixels: int):
        super().__init__()
        self._max_pixels = max_pixels

    def expand(self, images):
        return images | beam.ParDo(_Decode(self._max_pixels)).with_outputs(
            DEAD_LETTER, main="decoded")
