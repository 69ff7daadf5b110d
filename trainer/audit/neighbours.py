"""Nearest neighbours of every image by cosine similarity of its transfer values (faiss).

Vectors are L2-normalised, so inner product is cosine similarity.  Small collections use an
exact flat index; above `EXACT_LIMIT` vectors an IVF-Flat index (a coarse k-means partition into
√N cells, only the `NPROBE` nearest cells searched) keeps the all-pairs search from growing as
N².  Measured on Fashion-MNIST transfer values and jittered copies of them (BENCHMARKS.md,
"Data audit"; one faiss thread, all-pairs time extrapolated from 2,000 queries, busy machine):

| N | exact | IVF √N cells, nprobe 8, k-means included | its recall@10 |
|---|---:|---:|---:|
| 20,300 | 10 s | 12 s | 0.983 |
| 40,000 (jittered) | 41 s | 46 s | 0.978 |
| 70,000 | 149 s | 65 s | 0.974 |
| 300,000 (jittered) | 3,346 s | 976 s | 0.974 |

nprobe 4 falls to recall 0.90–0.93; nprobe 16 reaches 0.995 at about twice the time.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

EXACT_LIMIT = 50_000  # vectors; exact and IVF cost about the same at 40-50k (table above)
NPROBE = 8  # the fewest cells searched that kept recall@10 >= 0.95 at every size measured
LISTS_PER_ROOT = 1.0  # IVF cells = this × √N: k-means stays cheap (14 s at 300k)
_TRAIN_PER_LIST = 64  # k-means training points per IVF cell (faiss wants ≥ 39)


@dataclasses.dataclass(frozen=True)
class Neighbours:
    """Row i: the k nearest other images of image i, most similar first."""

    indices: np.ndarray  # int64 [N, k]; -1 where fewer than k exist
    similarities: np.ndarray  # float32 [N, k], cosine similarity
    index_type: str


def normalised(transfer_values: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(transfer_values, axis=1, keepdims=True)
    return np.ascontiguousarray(transfer_values / np.maximum(norms, 1e-12), dtype=np.float32)


def build_index(vectors: np.ndarray, exact_limit: int = EXACT_LIMIT, seed: int = 0,
                lists_per_root: float = LISTS_PER_ROOT):
    """Flat inner-product index, or IVF-Flat above `exact_limit` vectors."""
    import faiss

    n, dim = vectors.shape
    index: Any
    if n <= exact_limit:
        index = faiss.IndexFlatIP(dim)
    else:
        lists = max(1, min(n // 39, int(lists_per_root * math.sqrt(n))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(seed).choice(n, min(n, lists * _TRAIN_PER_LIST),
                                                    replace=False)
        index.train(vectors[np.sort(sample)])
        index.nprobe = NPROBE
    index.add(vectors)
    return index


def nearest_neighbours(transfer_values: np.ndarray, k: int,
                       exact_limit: int = EXACT_LIMIT) -> Neighbours:
    """The k nearest other images of each image (itself removed, even when a duplicate with
    identical values comes back before it)."""
    vectors = normalised(transfer_values)
    index = build_index(vectors, exact_limit)
    k = max(1, min(k, len(vectors) - 1))
    similarities, indices = index.search(vectors, k + 1)
    is_self = indices == np.arange(len(vectors))[:, None]
    # drop the self hit where found, else the last (least similar) column
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k)
    keep = np.ones_like(is_self)
    keep[np.arange(len(vectors)), drop] = False
    return Neighbours(indices[keep].reshape(-1, k).astype(np.int64),
                      similarities[keep].reshape(-1, k).astype(np.float32),
                      type(index).__name__)
