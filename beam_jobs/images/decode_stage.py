"""Decode each accepted image to the backbone's input; bad bytes become dead letters.

Photos leave this stage already resized to the backbone's S×S input, so no batch ever holds
full-resolution pixels, and JPEGs are decoded in the DCT domain at reduced scale
(`imaging.jpeg_draft_ratio`).  Images no larger than S travel at their native size and are
enlarged in batches by `beam_jobs.extract.stages.inference` with the same arithmetic.

Decoding runs on a small thread pool inside the DoFn (Pillow and TensorFlow release the GIL)
while the bundle's thread runs the backbone on earlier images: both cores stay busy.
"""

from __future__ import annotations

import collections
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator, Optional, Union

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from beam_jobs.images.decode import (
    RESIZE_POLICY,
    DecodeError,
    decode_rgb,
    resize_one,
    travels_at_native_size,
)
from beam_jobs.sources.elements import DEAD_LETTER, UNREADABLE, ModelInput, SourceImage, dead_letter

# A decoded image, or the (uri, reason, detail) of a rejected one's dead letter.
_Outcome = Union[ModelInput, tuple[str, str, str]]


def decode_threads() -> int:
    """One decoding thread per core: decode waits on nothing but the CPU."""
    return os.cpu_count() or 1


def prepare(image: SourceImage, size: int, policy: str, max_pixels: int
            ) -> Union[np.ndarray, tuple[str, str]]:
    """The pixels the backbone is fed for `image` (S×S×3, or native when no side exceeds S),
    or the (reason, detail) of its dead letter.  Runs on the pool's threads: no Beam calls."""
    try:
        pixels = image.pixels if image.pixels is not None else decode_rgb(
            image.encoded, max_pixels, draft_size=size)
    except DecodeError as err:
        return err.reason, err.detail
    if pixels.ndim != 3 or pixels.shape[-1] not in (1, 3) or 0 in pixels.shape:
        return UNREADABLE, f"unusable pixel shape {pixels.shape}"
    if travels_at_native_size(pixels.shape, size):
        return pixels
    return resize_one(pixels, size, policy)


class _Decode(beam.DoFn):
    """Submits each image to a bounded pool and emits outcomes in arrival order, `in_flight`
    behind (memory stays flat); the last ones are drained in finish_bundle."""

    def __init__(self, max_pixels: int, size: int, policy: str, threads: int, in_flight: int):
        self._max_pixels, self._size, self._policy = max_pixels, size, policy
        self._threads, self._in_flight = threads, max(1, in_flight)
        self._decoded = Metrics.counter("extract", "decoded")
        self._rejected = Metrics.counter("extract", "decode_rejected")
        self._pool: Optional[ThreadPoolExecutor] = None
        self._pending: collections.deque[Future] = collections.deque()

    def setup(self) -> None:
        if self._threads > 0:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="tv-decode")

    def start_bundle(self) -> None:
        self._pending = collections.deque()

    def process(self, element: tuple[str, SourceImage]) -> Iterator:
        split, image = element
        if self._pool is None:  # threads=0: decode inline, in order
            yield from self._emit(self._run(split, image))
            return
        self._pending.append(self._pool.submit(self._run, split, image))
        # Emit only beyond `in_flight`: the pool then always holds the next batch's worth of
        # images to decode while the backbone runs on this one (emitting whatever is done
        # would empty the pool right before each forward pass).
        while len(self._pending) > self._in_flight:
            yield from self._emit(self._pending.popleft().result())

    def finish_bundle(self) -> Iterator:
        while self._pending:
            for output in self._emit(self._pending.popleft().result()):
                if isinstance(output, beam.pvalue.TaggedOutput):
                    yield beam.pvalue.TaggedOutput(
                        output.tag, GlobalWindows.windowed_value(output.value))
                else:
                    yield GlobalWindows.windowed_value(output)

    def teardown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, split: str, image: SourceImage) -> _Outcome:
        """Decode, resize and hash (SHA-256 of a 12-MP JPEG is milliseconds) off the bundle's
        thread."""
        result = prepare(image, self._size, self._policy, self._max_pixels)
        if isinstance(result, tuple):
            return image.uri, result[0], result[1]
        return ModelInput(image.image_id, image.uri, image.label, split, result)

    def _emit(self, outcome: _Outcome) -> Iterator:
        """Counters are incremented here, on the bundle's thread, where Beam collects them."""
        if isinstance(outcome, tuple):
            self._rejected.inc()
            uri, reason, detail = outcome
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(uri, "decode", reason, detail))
            return
        self._decoded.inc()
        yield outcome


class DecodeImages(beam.PTransform):
    """(split, SourceImage) → ModelInput uint8 [S,S,3] (or native, when no side exceeds S);
    failures on the `dead_letter` tag.  `threads=0` decodes inline on the bundle's thread."""

    def __init__(self, max_pixels: int, size: int, policy: str = RESIZE_POLICY,
                 threads: Optional[int] = None, in_flight: int = 64):
        super().__init__()
        self._decode = _Decode(max_pixels, size, policy,
                               decode_threads() if threads is None else threads, in_flight)

    def expand(self, images):
        return images | beam.ParDo(self._decode).with_outputs(DEAD_LETTER, main="decoded")
