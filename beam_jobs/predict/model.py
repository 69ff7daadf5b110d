"""An exported model as `tv-predict` uses it: what it expects as input, and how to call it.

Both forms of `tv-predict` (image files, and the Beam batch job) decode with the extract job's
own Pillow path, `beam_jobs.images.decode.decode_for_backbone`, and feed the resulting pixels to the
export's pixels signature, so every format extraction accepts (TIFF, 16-bit, CMYK, WebP, EXIF
rotated photos) is classified from exactly the pixels its training features came from.

An export written before `preprocessing.json` existed has no pixels signature: its images are
then decoded by Pillow at full size (as extraction did at the time), re-encoded losslessly as
PNG and sent through `serving_default`, whose PNG decode is exact; the served resize is the one
extraction used.  The result is the same pixels, at the cost of a PNG encode per image.

An export written before issue 23 has no `ood_score`: it predicts as before, `Scored.ood_score`
is None, and `OLD_EXPORT_NOTE` says why.
"""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any, Optional, Sequence, Union

import numpy as np

from beam_jobs.cli.errors import UserError
from beam_jobs.images import decode as imaging
from beam_jobs.runs import read as runs
from schemas import serving as export
from schemas.serving import (INPUT_NAME, LABELS_FILE, OUTPUT_IN_DISTRIBUTION, OUTPUT_OOD_SCORE,
                             OUTPUT_PROBABILITIES, SERVING_DIR)

LEGACY_SIGNATURE = "serving_default"
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own guard, as tv-extract's --max_pixels default

ModelInput = Union[np.ndarray, bytes]  # uint8 [S, S, 3] pixels, or PNG bytes (legacy export)
OLD_EXPORT_NOTE = ("note: this model was exported before out-of-distribution scores, so nothing "
                   "marks images unlike its training data (no ood_score); export it again with "
                   "this version's tv-train to get them.")


@dataclasses.dataclass(frozen=True)
class Scored:
    """A batch's outputs: probabilities [N, C]; ood_score [N] and in_distribution [N], or None
    for an export without them."""

    probabilities: np.ndarray
    ood_score: Optional[np.ndarray] = None
    in_distribution: Optional[np.ndarray] = None


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How the model's training features saw each image; `image_size` 0 means a legacy export
    (bytes into `serving_default`)."""

    image_size: int = 0
    resize_policy: str = imaging.RESIZE_POLICY
    jpeg_dct_scaling_factor: int = 0
    signature: str = LEGACY_SIGNATURE
    input_name: str = INPUT_NAME
    has_ood: bool = False  # the export serves ood_score and in_distribution

    @property
    def takes_pixels(self) -> bool:
        return self.image_size > 0


def read_preprocessing(model_dir: str) -> Preprocessing:
    """The export's preprocessing record, or the legacy (bytes) contract when it has none."""
    path = runs.join(model_dir, export.PREPROCESSING_FILE)
    if not runs.exists(path):
        return Preprocessing()
    record = json.loads(runs.read_text(path))
    return Preprocessing(image_size=int(record[export.KEY_IMAGE_SIZE]),
                         resize_policy=record[export.KEY_RESIZE_POLICY],
                         jpeg_dct_scaling_factor=int(record[export.KEY_JPEG_FACTOR]),
                         signature=record[export.KEY_PIXELS_SIGNATURE],
                         input_name=record[export.KEY_PIXELS_INPUT],
                         has_ood=export.KEY_OOD in record)


def read_labels(model_dir: str) -> list[str]:
    text = runs.read_text(runs.join(model_dir, LABELS_FILE))
    return [line.rstrip("\n") for line in text.splitlines() if line.strip()]


def serving_dir(model_dir: str) -> str:
    """The export's SavedModel folder; a UserError when the model dir holds none."""
    folder = runs.join(model_dir.rstrip("/"), SERVING_DIR)
    if not runs.exists(runs.join(folder, "saved_model.pb")):
        raise UserError(f"No exported model at {folder}: point --model at a tv-train "
                        f"--model_dir whose training finished.")
    return folder


def model_input(encoded: Optional[bytes], pixels: Optional[np.ndarray], prep: Preprocessing,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> ModelInput:
    """Encoded bytes (or a source's decoded pixels) → what the export's signature takes.

    Raises `imaging.DecodeError` (a dead-letter reason) for bytes that are not a usable image.
    """
    if not prep.takes_pixels:
        full = imaging.decode_rgb(encoded, max_pixels) if pixels is None else pixels
        return _png(full)
    if pixels is not None:
        return imaging.resize_one(pixels, prep.image_size, prep.resize_policy)
    if prep.jpeg_dct_scaling_factor == imaging.DRAFT_FACTOR:
        return imaging.decode_for_backbone(encoded or b"", prep.image_size, prep.resize_policy,
                                           max_pixels)
    if not prep.jpeg_dct_scaling_factor:  # exported from runs that decoded JPEGs in full
        full = imaging.decode_rgb(encoded or b"", max_pixels)
        return imaging.resize_one(full, prep.image_size, prep.resize_policy)
    raise UserError(f"This model's runs decoded JPEGs with DCT scaling factor "
                    f"{prep.jpeg_dct_scaling_factor}, this version decodes with "
                    f"{imaging.DRAFT_FACTOR}; predict with the version that extracted them.")


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    array = np.asarray(pixels, np.uint8)
    image = Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # lossless; speed over size
    return buffer.getvalue()


class LoadedModel:
    """The serving SavedModel and the one signature tv-predict calls (the loaded object is
    kept alive with it: its variables belong to it)."""

    def __init__(self, model_dir: str, prep: Preprocessing):
        import tensorflow as tf

        self.saved_model = tf.saved_model.load(serving_dir(model_dir))
        if prep.signature not in self.saved_model.signatures:
            raise UserError(f"The model at {model_dir} has no {prep.signature!r} signature; "
                            f"export it again with this version's tv-train.")
        self.prep = prep
        self.signature = self.saved_model.signatures[prep.signature]
        self.has_ood = OUTPUT_OOD_SCORE in self.signature.structured_outputs

    def score(self, inputs: Sequence[ModelInput]) -> Scored:
        """The outputs for a batch of `model_input` results."""
        import tensorflow as tf

        batch: Any = (np.stack(inputs) if self.prep.takes_pixels
                      else tf.constant(list(inputs), tf.string))
        out = self.signature(**{self.prep.input_name: batch})
        if not self.has_ood:
            return Scored(out[OUTPUT_PROBABILITIES].numpy())
        return Scored(out[OUTPUT_PROBABILITIES].numpy(), out[OUTPUT_OOD_SCORE].numpy(),
                      out[OUTPUT_IN_DISTRIBUTION].numpy())

    def probabilities(self, inputs: Sequence[ModelInput]) -> np.ndarray:
        """float32 [N, C] for a batch of `model_input` results."""
        return self.score(inputs).probabilities


def top_k(probabilities: np.ndarray, labels: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The k most probable labels, most probable first (ties by label order)."""
    best = np.argsort(-probabilities, kind="stable")[:k]
    return [(labels[i], float(probabilities[i])) for i in best]


def check_top_k(top_k_value: int) -> None:
    if top_k_value <= 0:
        raise UserError(f"--top_k must be positive, got {top_k_value}.")
