"""Near-duplicate pairs: copies of one picture (re-encoded, resized, lightly edited).

Three rules (`--duplicate_rule`), all read off nearest-neighbour lists:

- `pixels` (default): two stages.  Stage 1 takes the pairs of the `standout` rule's whitened
  neighbour lists and of the plain cosine ones that score at least `CANDIDATE_STANDOUT` (a
  loose bound: nearly every copy passes it, and so do many look-alikes).  Stage 2 reads
  those images' pixels again by uri (trainer.audit.pixels) and reports a pair whose
  thumbprints correlate at least `--duplicate_pixels`; or, when its standout score is at
  least `ALIGN_STANDOUT`, whose *aligned* similarity (one image searched for a box that
  matches the whole of the other: a crop, or the picture inside a frame) reaches the same
  bar; or that stands out (standout ≥ `STANDOUT_ALONE`) with pixels that still agree
  (≥ `PIXELS_WITH_STANDOUT`).  What the transfer values cannot tell apart (two plain
  T-shirts, two crops of one photo) the pixels do; what the pixels cannot (a crop moves the
  content) the alignment and the transfer values do.  The aligned search is asked only of
  pairs that already stand out a little: free to move a box, two plain garments line up too.
  A pair whose pixels cannot be read falls back on the `standout` rule.  Recall per kind of
  copy: BENCHMARKS.md, "Near duplicates that people make".

- `standout`: how far a pair stands out from its neighbourhood.  The vectors are first
  PCA-whitened on the audited collection itself (each principal direction scaled to unit
  variance, eigenvalues floored at `WHITENING_FLOOR` × their mean): distinct images of one kind
  differ mostly along the few high-variance "what is it" directions, a copy differs from its
  original in none, so after whitening a copy stays close while look-alikes spread out.  The
  score is CSLS (cross-domain similarity local scaling): 2·cos(a, b) − r(a) − r(b), with r(x)
  the mean whitened similarity of x to its `DENSITY_K` nearest neighbours, so a pair in a dense
  region (plain trousers, sandals) must be closer than one in a sparse region.  A pair is
  reported at score ≥ `--duplicate_standout`.
- `similarity`: raw cosine ≥ `--duplicate_similarity`, the first rule; kept for comparison
  and for collections where an absolute threshold is what the user wants.

Measured on Fashion-MNIST with planted JPEG re-encodes and one-pixel resizes (BENCHMARKS.md,
"Data audit"): at recall 0.9 of the planted pairs the standout rule reports ~2k other pairs,
the similarity rule ~70k.  Pairs are oriented so that `b` is the copy to drop: across splits
`a` is the evaluation-side image (test, then validation), so excluding every `b` removes the
leak without changing the test set; within a split `b` is the later uri.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from trainer.audit.neighbours import Neighbours, nearest_neighbours, normalised
from trainer.audit.pixels import Prints

RULES = ("pixels", "standout", "similarity")
DUPLICATE_RULE = "pixels"
DUPLICATE_STANDOUT = 0.33
DUPLICATE_PIXELS = 0.99  # chosen on the tune copies (benchmarks/audit_duplicates.py)
CANDIDATE_STANDOUT = -0.2  # stage 1 of the pixels rule: added borders score about 0
STANDOUT_ALONE = DUPLICATE_STANDOUT  # what the standout rule reports needs only
PIXELS_WITH_STANDOUT = 0.9  # this much pixel agreement, aligned or not
ALIGN_STANDOUT = 0.0  # the aligned search is asked of candidates standing out this much
ALIGN_FLOOR = 0.7  # ... whose plain pixel similarity is at least this (copies: ≥ 0.73)
DUPLICATE_SIMILARITY = 0.95
DENSITY_K = 20  # neighbours behind r(x); the standout threshold was measured with it
WHITENING_FLOOR = 0.1  # × mean eigenvalue: directions with (almost) no variance stay quiet
_CHUNK = 65_536  # rows per step of the covariance sum
_SPLIT_RANK = {"test": 0, "validation": 1, "train": 2}  # kept side first


@dataclasses.dataclass(frozen=True)
class Pairs:
    a: np.ndarray  # int64 [P] rows of the image to keep
    b: np.ndarray  # int64 [P] rows of its copy
    similarity: np.ndarray  # float32 [P] cosine similarity of the transfer values
    standout: np.ndarray  # float32 [P] the standout score (NaN under the similarity rule)
    pixels: np.ndarray  # float32 [P] pixel similarity (NaN: not looked at, or unreadable)


def whitened(transfer_values: np.ndarray, floor: float = WHITENING_FLOOR) -> np.ndarray:
    """L2-normalised values, centred and PCA-whitened (float32, same shape)."""
    vectors = normalised(transfer_values)
    mean = vectors.mean(axis=0, dtype=np.float64)
    gram = np.zeros((vectors.shape[1],) * 2)
    for start in range(0, len(vectors), _CHUNK):  # D×D at a time, never an N×D float64 copy
        chunk = vectors[start:start + _CHUNK]
        gram += chunk.T @ chunk
    covariance = gram / max(1, len(vectors)) - np.outer(mean, mean)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    eigenvalues = np.maximum(eigenvalues, 0.0)
    scale = 1.0 / np.sqrt(eigenvalues + floor * max(float(eigenvalues.mean()), 1e-12))
    projection = (eigenvectors * scale).astype(np.float32)
    return np.ascontiguousarray((vectors - mean.astype(np.float32)) @ projection)


def _candidates(neighbours: Neighbours) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each unordered pair found in some neighbour list, once: (i, j, similarity), i < j."""
    n, k = neighbours.indices.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    cols = neighbours.indices.ravel().astype(np.int64)
    sims = neighbours.similarities.ravel()
    valid = cols >= 0
    low = np.minimum(rows, cols)[valid]
    high = np.maximum(rows, cols)[valid]
    sims = sims[valid]
    key = low * n + high
    order = np.lexsort((-sims, key))  # by pair, most similar direction first
    first = np.ones(len(order), bool)
    first[1:] = key[order][1:] != key[order][:-1]
    chosen = order[first]
    return low[chosen], high[chosen], sims[chosen].astype(np.float32)


def _cosine(vectors: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Row-wise dot products, a chunk at a time (a gather of all pairs at once is N·k·D)."""
    out = np.empty(len(i), np.float32)
    for start in range(0, len(i), _CHUNK):
        end = start + _CHUNK
        out[start:end] = np.einsum("ij,ij->i", vectors[i[start:end]], vectors[j[start:end]])
    return out


def standout_pairs(transfer_values: np.ndarray, threshold: float = DUPLICATE_STANDOUT,
                   exact_limit: int | None = None, also: Neighbours | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, score) of every pair whose standout score reaches `threshold`, among the pairs
    of the whitened neighbour lists and, when given, of the `also` lists (the raw cosine
    neighbours: a framed copy can be near its original there and not after whitening)."""
    white = normalised(whitened(transfer_values))
    kwargs = {} if exact_limit is None else {"exact_limit": exact_limit}
    neighbours = nearest_neighbours(white, DENSITY_K, **kwargs)
    density = np.where(neighbours.indices >= 0, neighbours.similarities, np.nan)
    r = np.nan_to_num(np.nanmean(density, axis=1), nan=0.0)
    i, j, white_similarity = _candidates(neighbours)
    if also is not None:
        more_i, more_j, _ = _candidates(also)
        key = np.unique(np.concatenate([i, more_i]) * len(white) + np.concatenate([j, more_j]))
        i, j = key // len(white), key % len(white)
        white_similarity = _cosine(white, i, j)
    del white
    score = 2.0 * white_similarity - r[i] - r[j]
    keep = score >= threshold
    return i[keep], j[keep], score[keep].astype(np.float32)


def similar_pairs(neighbours: Neighbours, threshold: float = DUPLICATE_SIMILARITY
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, cosine) of every neighbour pair with cosine ≥ threshold."""
    i, j, sims = _candidates(neighbours)
    keep = sims >= threshold
    return i[keep], j[keep], sims[keep]


def oriented(i: np.ndarray, j: np.ndarray, similarity: np.ndarray, standout: np.ndarray,
             uris: np.ndarray, splits: np.ndarray, pixels: np.ndarray | None = None) -> Pairs:
    """Pairs with the kept image first, strongest evidence first (pixels, then standout)."""
    pixels = np.full(len(i), np.nan, np.float32) if pixels is None else pixels
    evidence = np.where(np.isnan(standout), similarity, standout) + 10.0 * np.nan_to_num(
        pixels, nan=0.0)

    def kept_first(x: int, y: int) -> tuple[int, int]:
        key_x = (_SPLIT_RANK.get(splits[x], 3), uris[x])
        key_y = (_SPLIT_RANK.get(splits[y], 3), uris[y])
        return (x, y) if key_x <= key_y else (y, x)

    rows = sorted(((*kept_first(int(x), int(y)), n) for n, (x, y) in enumerate(zip(i, j))),
                  key=lambda p: (-evidence[p[2]], uris[p[0]], uris[p[1]]))
    order = np.asarray([p[2] for p in rows], np.int64)
    return Pairs(np.asarray([p[0] for p in rows], np.int64),
                 np.asarray([p[1] for p in rows], np.int64),
                 similarity[order].astype(np.float32), standout[order].astype(np.float32),
                 pixels[order].astype(np.float32))


def pixel_checked(i: np.ndarray, j: np.ndarray, scores: np.ndarray, pixels: np.ndarray,
                  threshold: float = DUPLICATE_PIXELS,
                  unread: float = DUPLICATE_STANDOUT,
                  aligned: np.ndarray | None = None) -> np.ndarray:
    """Which candidate pairs the pixels rule reports (see the module docstring); a pair
    without pixels needs the standout score `unread`.  `aligned`: NaN where not searched."""
    readable = ~np.isnan(pixels)
    seen = np.nan_to_num(pixels, nan=-1.0)
    boxed = np.full(len(i), -1.0) if aligned is None else np.nan_to_num(aligned, nan=-1.0)
    return np.where(readable,
                    (seen >= threshold)
                    | ((scores >= ALIGN_STANDOUT) & (boxed >= threshold))
                    | ((scores >= STANDOUT_ALONE)
                       & (np.maximum(seen, boxed) >= PIXELS_WITH_STANDOUT)),
                    scores >= unread)


def pixel_stage(i: np.ndarray, j: np.ndarray, scores: np.ndarray, uris: np.ndarray,
                read: Callable[[str], np.ndarray | None], below: float = DUPLICATE_PIXELS
                ) -> tuple[np.ndarray, np.ndarray]:
    """(plain, aligned) pixel similarity of the candidate pairs.  The aligned search (~2 ms
    a pair) runs only where it can change the verdict: standout ≥ `ALIGN_STANDOUT` and a
    plain similarity in [`ALIGN_FLOOR`, `below`); NaN elsewhere."""
    prints = Prints(np.unique(np.concatenate([i, j])), uris, read)
    plain = prints.similarity(i, j)
    aligned = np.full(len(i), np.nan, np.float32)
    seen = np.nan_to_num(plain, nan=-1.0)
    ask = (scores >= ALIGN_STANDOUT) & (seen >= ALIGN_FLOOR) & (seen < below)
    aligned[ask] = prints.aligned(i[ask], j[ask])
    return plain, aligned


def near_duplicates(transfer_values: np.ndarray, neighbours: Neighbours, uris: np.ndarray,
                    splits: np.ndarray, rule: str = DUPLICATE_RULE,
                    standout: float = DUPLICATE_STANDOUT,
                    similarity: float = DUPLICATE_SIMILARITY,
                    exact_limit: int | None = None,
                    read: Callable[[str], np.ndarray | None] | None = None,
                    pixels: float = DUPLICATE_PIXELS) -> Pairs:
    """The pairs `rule` reports, each once, oriented and ordered (see the module docstring).
    `read` (uri → uint8 pixels or None) is the pixels rule's second stage."""
    if rule == "similarity":
        i, j, sims = similar_pairs(neighbours, similarity)
        return oriented(i, j, sims, np.full(len(i), np.nan, np.float32), uris, splits)
    if rule == "standout":
        i, j, scores = standout_pairs(transfer_values, standout, exact_limit)
        return oriented(i, j, _cosine(normalised(transfer_values), i, j), scores, uris, splits)
    i, j, scores = standout_pairs(transfer_values, CANDIDATE_STANDOUT, exact_limit, neighbours)
    if read is None:
        seen = aligned = np.full(len(i), np.nan, np.float32)
    else:
        seen, aligned = pixel_stage(i, j, scores, uris, read, pixels)
    keep = pixel_checked(i, j, scores, seen, pixels, standout, aligned)
    i, j, scores = i[keep], j[keep], scores[keep]
    best = np.fmax(seen[keep], aligned[keep])
    return oriented(i, j, _cosine(normalised(transfer_values), i, j), scores, uris, splits, best)
