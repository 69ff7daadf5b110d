"""Decode and resize each accepted image for its backbone; bad bytes become dead letters."""

from __future__ import annotations

from typing import Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_jobs.elements import ModelInput, SourceImage, dead_letter
from beam_jobs.imaging import DecodeError, decode_rgb, resize_to_square
from beam_jobs.splits import DEAD_LETTER


class _DecodeAndResize(beam.DoFn):
    def __init__(self, image_size: int, max_pixels: int):
        self._size = image_size
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
        resized = resize_to_square(pixels, self._size).numpy()
        self._decoded.inc()
        yield ModelInput(image.image_id, image.uri, image.label, split, resized)


class DecodeImages(beam.PTransform):
    """(split, SourceImage) → ModelInput uint8 [S,S,3]; failures on the `dead_letter` tag."""

    def __init__(self, image_size: int, max_pixels: int):
        super().__init__()
        self._size = image_size
        self._max_pixels = max_pixels

    def expand(self, images):
        return images | beam.ParDo(_DecodeAndResize(self._size, self._max_pixels)).with_outputs(
            DEAD_LETTER, main="decoded")
