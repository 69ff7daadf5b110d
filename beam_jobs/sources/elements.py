"""The one element type every source yields, so everything downstream is shared."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Optional

import numpy as np

# Dead-letter reasons: a small, documented enum (see README "Dead letters").
DEAD_LETTER = "dead_letter"  # the tagged output every stage sends rejected inputs to
EMPTY = "empty"
NOT_AN_IMAGE = "not_an_image"
TRUNCATED = "truncated"
UNREADABLE = "unreadable"
TOO_LARGE = "too_large"
DUPLICATE = "duplicate"
CONFLICTING_LABELS = "conflicting_labels"
INFERENCE_FAILED = "inference_failed"
REASONS = (EMPTY, NOT_AN_IMAGE, TRUNCATED, UNREADABLE, TOO_LARGE, DUPLICATE,
           CONFLICTING_LABELS, INFERENCE_FAILED)


@dataclasses.dataclass(frozen=True)
class SourceImage:
    """One input image as a source found it.

    Exactly one of `encoded` (file bytes: JPEG, PNG, ...) and `pixels` (already decoded uint8
    [H, W, C], as IDX and CIFAR store them) is set, unless the source could not read the input
    at all: then `rejected` holds (reason, detail) and the input leaves as a dead letter before
    de-duplication, still counted once.  `source_split` is the source's own split
    ("train"/"validation"/"test") when it has one; it wins over hashing.
    """

    uri: str
    label: str
    encoded: Optional[bytes] = None
    pixels: Optional[np.ndarray] = None
    source_split: Optional[str] = None
    rejected: Optional[tuple[str, str]] = None

    @classmethod
    def unusable(cls, uri: str, reason: str, detail: str, label: str = "") -> "SourceImage":
        """An input the source found but could not turn into image bytes (still an input)."""
        assert reason in REASONS, reason
        return cls(uri=uri, label=label, rejected=(reason, detail))

    @property
    def image_id(self) -> str:
        """SHA-256 of the image bytes: identical images share an id across runs and sources."""
        if self.encoded is not None:
            return hashlib.sha256(self.encoded).hexdigest()
        if self.pixels is None:  # unusable: no bytes; unique per uri so no grouping merges them
            return hashlib.sha256(b"unusable:" + self.uri.encode()).hexdigest()
        pixels = np.ascontiguousarray(self.pixels, dtype=np.uint8)
        header = ("x".join(map(str, pixels.shape)) + ";").encode()
        return hashlib.sha256(header + pixels.tobytes()).hexdigest()


@dataclasses.dataclass(frozen=True)
class ModelInput:
    """An accepted, decoded image on its way to the backbone: already its S×S input, or at
    native size when no side exceeds S (then enlarged with its batch, the same arithmetic)."""

    image_id: str
    uri: str
    label: str
    split: str
    image: np.ndarray  # uint8 [S, S, 3], or [H, W, 1 or 3] with H, W <= S
    view: int = 0  # schemas.record.ORIGINAL_VIEW; its mirror or augmented views: beam_jobs.extract.stages.augment


def dead_letter(uri: str, stage: str, reason: str, detail: str) -> str:
    """One JSON line per rejected input; `reason` is from REASONS."""
    assert reason in REASONS, reason
    return json.dumps({"uri": uri, "stage": stage, "reason": reason, "detail": detail[:500]},
                      sort_keys=True)
