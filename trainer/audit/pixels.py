"""The duplicate audit's second stage: do two candidate images show the same pixels?

Transfer values say what an image shows, so two plain grey T-shirts, or two crops of one
photo, can sit as close as a photo and its rescaled copy.  This stage looks at the pixels of
the candidate pairs only, through a *thumbprint* per image: two grey thumbnails of
`SIDE` × `SIDE` (Lanczos, antialiased), each centred and scaled to unit length, one of the
whole picture and one of its content (a uniform frame trimmed off: a border someone added, or
the empty background around a Fashion-MNIST garment; then padded to a square so nothing is
stretched).  Two images' pixel similarity is the better of the two Pearson correlations:
unchanged by rescaling (both become SIDE × SIDE), re-encoding and format changes (pixel noise
averages out), brightness and contrast (centred and scaled), added borders (the content
thumbnail); a small crop moves the content by a fraction of a thumbnail pixel, which costs a
few hundredths, and a crop of a few per cent or a frame over busy edges more.  For those, a
pair the caller picks is also compared *aligned*: a 64 × 64 grey grid of each image is kept,
and the box of one (up to 16 % off each side; coarse, then refined a line at a time) that best
matches the whole of the other is compared at 32 × 32.
Measured per kind of copy in BENCHMARKS.md ("Near duplicates that people make").

Reading them back: a run keeps where each image came from (`uri`), not its pixels, so the
stage reads the images its candidate pairs name again, the way the extract job read them:
- files and `gs://…` objects: through Beam's `FileSystems`, decoded by
  `beam_jobs.images.decode` (JPEGs in the DCT domain at the smallest scale that keeps
  `THUMBNAIL_DECODE` pixels a side, so a 12-megapixel photo costs a fraction of a full decode);
- `idx:<part>#<row>`: a row of an IDX file, found through the run manifest's `idx:` source
  (trainer.report.thumbnails does this for the report; reused);
- `<file>.tfrecord#<n>`: the n-th record of a TFRecord file (read once while its rows are
  asked for in order), its image under the usual feature keys;
- `cifar10:<batch>#<row>`: a row of a CIFAR-10 batch under the manifest's `cifar10:` source.
Anything else, or a file gone since extraction, has no pixels: the caller decides without them.
"""

from __future__ import annotations

import functools
import itertools
import logging
import operator
import posixpath
from typing import Callable, Optional, Sequence

import numpy as np

from beam_jobs.runs.read import Run

SIDE = 12  # thumbprint side (144 numbers); 16 and 24 did worse on scaled copies
RESAMPLING = "LANCZOS"  # antialiased: BOX aliases, and a copy scaled down aliases differently
FRAME_TOLERANCE = 24  # grey levels a frame pixel may differ from the frame's colour
FRAME_UNIFORM = 0.97  # share of a line within tolerance of the frame colour for it to count
ROWS = 3  # thumbnails per image: whole, inside the outermost frame, content
COMPARED = ((0, 0), (0, 1), (1, 0), (2, 2))  # rows of a and b compared
THUMBNAIL_DECODE = 64  # pixels a side a JPEG is decoded to at least (DCT scaling)
GRID = 64  # side of the grey grid kept per image for the aligned comparison (4 KB as uint8)
ALIGN_CUT = 10  # most grid lines a box may cut from each side (16 %: a 6 % crop, a 10 % frame)
ALIGN_STEP = 2  # coarse search step in grid lines; the best box is then refined ±1 line
ALIGN_SIDE = 32  # side at which the refined box is compared (finer than SIDE: look-alikes part)
_CHUNK = 65_536  # pairs compared per step
_CIFAR_PREFIX = "cifar10:"
log = logging.getLogger(__name__)


def _frame_lines(lines: np.ndarray, tolerance: float) -> tuple[int, float]:
    """(how many leading lines of `lines` are one uniform colour, that colour)."""
    colour = float(np.median(lines[0]))
    uniform = np.mean(np.abs(lines - colour) <= tolerance, axis=1) >= FRAME_UNIFORM
    return (len(uniform) if uniform.all() else int(np.argmin(uniform))), colour


def trimmed(grey: np.ndarray, tolerance: float = FRAME_TOLERANCE, passes: int = 2
            ) -> tuple[np.ndarray, Optional[float]]:
    """(`grey` without the uniform frame around its content, the frame's innermost colour or
    None when there was no frame).

    Each side is trimmed on its own (a garment touching the bottom edge still loses the
    empty rows above it), twice over: an added border first, then a background under it.
    """
    background = None
    for _ in range(passes):
        sides = [_frame_lines(lines, tolerance)
                 for lines in (grey, grey[::-1], grey.T, grey.T[::-1])]
        (top, c0), (bottom, c1), (left, c2), (right, c3) = sides
        if top + bottom >= len(grey) - 1 or left + right >= grey.shape[1] - 1:
            return grey, background  # blank, or a line: nothing to align on
        if not top + bottom + left + right:
            break
        background = float(np.median([c for (n, c) in sides if n]))
        grey = grey[top:len(grey) - bottom, left:grey.shape[1] - right]
    return grey, background


def squared(grey: np.ndarray) -> np.ndarray:
    """`grey` centred on a square of its own mean level, so a narrow garment is not stretched
    (a trim one line off then moves it by 1/28 of the thumbnail, not 1/9) and the padding,
    flat at the mean, adds nothing to a correlation."""
    height, width = grey.shape
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    return np.pad(grey, ((top, side - height - top), (left, side - width - left)),
                  constant_values=float(grey.mean()))


def _unit(grey: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    small = Image.fromarray(grey).resize((side, side), getattr(Image.Resampling, RESAMPLING))
    vector = np.array(small, np.float32).ravel()
    vector -= vector.mean()
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 1e-3 else np.zeros_like(vector)


def luma(pixels: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] → float32 [H, W] grey (ITU-R 601 weights); a 2-D array is taken as
    grey already.  Channel by channel: a 48-megapixel photo costs 192 MB, not 576."""
    if pixels.ndim == 2:
        return pixels.astype(np.float32, copy=False)
    grey = pixels[..., 0].astype(np.float32) * np.float32(0.299)
    grey += pixels[..., 1] * np.float32(0.587)
    grey += pixels[..., 2] * np.float32(0.114)
    return grey


def thumbprint(pixels: np.ndarray, side: int = SIDE) -> np.ndarray:
    """uint8 [H, W, 3] (or grey [H, W]) → float32 [ROWS, side²]: the whole picture, the picture
    inside its outermost uniform frame (an added border off), and its content inside every
    frame (the background under the border off too, padded square); each centred, unit
    length (zeros if flat)."""
    grey = luma(pixels)
    inside, _ = trimmed(grey, passes=1)
    content, _ = trimmed(grey, passes=2)
    return np.stack([_unit(grey, side), _unit(inside, side), _unit(squared(content), side)])


def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pixel similarity of thumbprints [..., ROWS, side²]: the best of the rows compared in
    `COMPARED` (whole vs whole; a framed copy's inside vs the original's whole; content vs
    content, where a trim one line off costs only that row)."""
    return np.max([np.einsum("...j,...j->...", a[..., x, :], b[..., y, :])
                   for x, y in COMPARED], axis=0)


def grey_grid(pixels: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] (or grey [H, W]) → uint8 [GRID, GRID]: the whole picture, grey, Lanczos,
    squeezed square (a crop or a frame then cuts the same share of lines on each axis)."""
    from PIL import Image

    small = Image.fromarray(luma(pixels)).resize((GRID, GRID), Image.Resampling.LANCZOS)
    return np.clip(np.rint(np.asarray(small)), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=None)
def _box_weights(start: int, stop: int, side: int, size: int = GRID) -> np.ndarray:
    """float32 [side, size]: lines [start, size - stop) of a grid resampled to `side` lines
    (a triangle filter as wide as the step, so shrinking averages rather than aliases).
    Cached: the refinement asks for the same few hundred boxes again and again."""
    stop = size - stop
    scale = (stop - start) / side
    centres = start + (np.arange(side) + 0.5) * scale
    weights = np.maximum(0.0, 1.0 - np.abs(np.arange(size) + 0.5 - centres[:, None])
                         / max(scale, 1.0))
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


_CUTS = [(a, b) for a in range(0, ALIGN_CUT + 1, ALIGN_STEP)
         for b in range(0, ALIGN_CUT + 1, ALIGN_STEP)]
_COARSE = np.stack([_box_weights(a, b, SIDE) for a, b in _CUTS])  # [C, SIDE, GRID]
_WHOLE_FINE = _box_weights(0, 0, ALIGN_SIDE)


def _units(vectors: np.ndarray) -> np.ndarray:
    vectors = vectors - vectors.mean(axis=-1, keepdims=True)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-3)


def _whole(grid: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return _units((weights @ grid @ weights.T).ravel())


def _boxes(grid: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """[R·C, side²]: `grid` resampled by every pair of row weights [R, side, GRID] and column
    weights [C, side, GRID].  Two plain matrix products (np.tensordot took 20× as long)."""
    side = rows.shape[1]
    out = (rows @ grid).reshape(-1, grid.shape[1]) @ columns.reshape(-1, grid.shape[1]).T
    return out.reshape(len(rows), side, len(columns), side).transpose(0, 2, 1, 3).reshape(
        len(rows) * len(columns), side * side)


@functools.lru_cache(maxsize=None)
def _near(first: int, last: int) -> np.ndarray:
    """float32 [≤ 9, ALIGN_SIDE, GRID]: the boxes one line either side of a coarse cut."""
    return np.stack([_box_weights(x, y, ALIGN_SIDE)
                     for x in range(max(0, first - 1), first + 2)
                     for y in range(max(0, last - 1), last + 2)])


def _coarse(grid: np.ndarray) -> np.ndarray:
    """[C², SIDE²] every coarse box of `grid` (every ALIGN_STEP-th cut, up to ALIGN_CUT lines
    off each side), centred and unit length: the search's main cost, so made once an image."""
    return _units(_boxes(grid, _COARSE, _COARSE))


def _best_box(grid: np.ndarray, other: np.ndarray, coarse: np.ndarray) -> float:
    """The best correlation of the whole of `other` with a box of `grid` (`coarse`: its
    `_coarse`): the best coarse box, then each of its four cuts ±1 line, at ALIGN_SIDE."""
    best = int(np.argmax(coarse @ _whole(other, _COARSE[0])))  # _CUTS[0] is (0, 0)
    (top, bottom), (left, right) = _CUTS[best // len(_CUTS)], _CUTS[best % len(_CUTS)]
    fine = _units(_boxes(grid, _near(top, bottom), _near(left, right)))
    return float(np.max(fine @ _whole(other, _WHOLE_FINE)))


def _flat(grid: np.ndarray) -> bool:
    return float(grid.std()) < 1e-3  # nothing to align


def aligned_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Pixel similarity of two grey grids when one may be a crop of the other, or the other
    framed: the better of a box of `a` against all of `b` and the reverse.  The search (a
    box per side of up to 16 %) finds crops and frames the fixed thumbnails miss; it also
    lets look-alikes line up, so the caller asks it only of pairs whose transfer values
    already stand out a little (trainer.audit.duplicates).  NaN if either is flat."""
    a, b = a.astype(np.float32), b.astype(np.float32)
    if _flat(a) or _flat(b):
        return float("nan")
    return max(_best_box(a, b, _coarse(a)), _best_box(b, a, _coarse(b)))


class Prints:
    """What stage 2 keeps of each image it read: the thumbprint and the grey grid."""

    def __init__(self, rows: np.ndarray, uris: Sequence[str] | np.ndarray,
                 read: Callable[[str], Optional[np.ndarray]], side: int = SIDE):
        """Reads `rows` (sorted, unique) of `uris` in uri order (files that hold many images
        are then read once).  float16 thumbprints: 864 B an image; grids 4 KB."""
        self.rows = rows
        self.prints = np.zeros((len(rows), ROWS, side * side), np.float16)
        self.grids = np.zeros((len(rows), GRID, GRID), np.uint8)
        self.found = np.zeros(len(rows), bool)
        for n in sorted(range(len(rows)), key=lambda n: uris[rows[n]]):
            pixels = read(uris[rows[n]])
            if pixels is not None and pixels.size:
                grey = luma(pixels)  # once for both
                self.prints[n] = thumbprint(grey, side)
                self.grids[n], self.found[n] = grey_grid(grey), True
        self.found &= np.abs(self.prints).sum(axis=(1, 2)) > 0

    def similarity(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """float32 [P] pixel similarity of each pair (i[p], j[p]); NaN where either image
        could not be read or is flat (no pixels to compare: the caller falls back on stage 1)."""
        a, b = np.searchsorted(self.rows, i), np.searchsorted(self.rows, j)
        out = np.empty(len(i), np.float32)
        for start in range(0, len(i), _CHUNK):  # a gather of every pair at once is 1 KB a pair
            end = start + _CHUNK
            out[start:end] = similarity(self.prints[a[start:end]].astype(np.float32),
                                        self.prints[b[start:end]].astype(np.float32))
        out[~(self.found[a] & self.found[b])] = np.nan
        return out

    def aligned(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """float32 [P] `aligned_similarity` of each pair (NaN as in `similarity`, or where
        either grid is flat); ~2 ms a pair, so only for the pairs the caller picks.  Each
        direction is searched from the image whose boxes it moves, grouped by that image,
        so an image's coarse boxes are made once however many pairs it is in."""
        a, b = np.searchsorted(self.rows, i), np.searchsorted(self.rows, j)
        out = np.full(len(i), np.nan, np.float32)
        usable = {x: not _flat(self.grids[x]) for x in np.unique(np.concatenate([a, b]))
                  if self.found[x]}
        sides = sorted((x, y, p) for p, pair in enumerate(zip(a, b))
                       if usable.get(pair[0]) and usable.get(pair[1])
                       for x, y in (pair, pair[::-1]))
        for x, group in itertools.groupby(sides, key=operator.itemgetter(0)):
            grid = self.grids[x].astype(np.float32)
            coarse = _coarse(grid)
            for _, y, p in group:
                out[p] = np.fmax(out[p], _best_box(grid, self.grids[y].astype(np.float32),
                                                   coarse))
        return out


class PixelReader:
    """uri → uint8 [H, W, 3] or None.  Ask in uri order: multi-image files are kept one at a
    time (the last TFRecord file, the last CIFAR batch), IDX parts for the whole audit."""

    def __init__(self, runs: Sequence[Run]):
        from trainer.report.thumbnails import ThumbnailLoader

        self._thumbnails = ThumbnailLoader(runs)
        sources = [str(run.manifest.get("source", "")) for run in runs]
        self._cifar_folders = sorted({s[len(_CIFAR_PREFIX):] for s in sources
                                      if s.startswith(_CIFAR_PREFIX)})
        self._held: tuple[str, object] = ("", None)

    def read(self, uri: str) -> Optional[np.ndarray]:
        try:
            if uri.startswith("idx:"):
                return self._thumbnails.load(uri)
            if uri.startswith(_CIFAR_PREFIX):
                return self._cifar_row(uri)
            if "#" in uri:
                return self._tfrecord_row(uri)
            return self._file(uri)
        except Exception as err:  # noqa: BLE001 - a missing picture leaves the pair to stage 1
            log.info("no pixels for %s: %s", uri, err)
            return None

    def _bytes(self, path: str) -> bytes:
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path, compression_type="uncompressed") as f:
            return f.read()

    def _file(self, uri: str) -> np.ndarray:
        from beam_jobs.images.decode import decode_rgb

        return decode_rgb(self._bytes(uri), draft_size=THUMBNAIL_DECODE)

    def _held_file(self, key: str, load):
        if self._held[0] != key:
            self._held = ("", None)  # release the previous file before reading the next
            self._held = (key, load())
        return self._held[1]

    def _tfrecord_row(self, uri: str) -> Optional[np.ndarray]:
        import gzip

        from beam_jobs.images.decode import decode_rgb
        from beam_jobs.sources.tfrecord import IMAGE_KEYS, _feature_value, iter_records

        path, _, row = uri.rpartition("#")

        def records() -> list[bytes]:
            data = self._bytes(path)
            return list(iter_records(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data))

        payloads = self._held_file(path, records)
        if not row.isdigit() or int(row) >= len(payloads):
            return None
        from tensorflow.core.example import example_pb2

        features = example_pb2.Example.FromString(payloads[int(row)]).features
        _, encoded = _feature_value(features, IMAGE_KEYS)
        return decode_rgb(encoded, draft_size=THUMBNAIL_DECODE) if isinstance(
            encoded, bytes) else None

    def _cifar_row(self, uri: str) -> Optional[np.ndarray]:
        from beam_jobs.sources.cifar10 import load_batch

        name, _, row = uri[len(_CIFAR_PREFIX):].partition("#")
        for folder in self._cifar_folders:
            for path in (posixpath.join(folder, name),
                         posixpath.join(folder, "cifar-10-batches-py", name)):
                try:
                    batch = self._held_file(path, lambda p=path: load_batch(self._bytes(p)))
                except OSError:
                    continue
                data = np.asarray(batch["data"], np.uint8).reshape(-1, 3, 32, 32)
                return np.ascontiguousarray(data[int(row)].transpose(1, 2, 0))
        return None
