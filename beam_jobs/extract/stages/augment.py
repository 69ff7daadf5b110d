"""Cached augmented views: more train records per image, and a mirror for test-time augmentation.

A head trained on cached transfer values never sees an augmented pixel unless the extract job
runs the backbone on one, so `--augment_views=K` feeds the backbone K label-preserving
variations of every train image (a mild random-resized crop, an optional left-right flip and
a brightness/contrast jitter) and `--mirror_views` the left-right mirror of every image in
every split (view `record.MIRROR_VIEW`), which training averages with the original at
evaluation time (`tv-train --tta`).

Every view starts from the backbone's S×S input of view 0 (images that travel at native size
are enlarged here with the very resize the inference stage applies to them), so the mirror is
exactly `np.fliplr` of what view 0 is fed, as the serving graph flips its own S×S input.
A view's random state comes from a hash of (image_id, view): re-running, on any runner, in
any order, gives the same pixels.  Cost per view: about 1 ms on a 224×224 input (one Pillow
bilinear resample and a table lookup), small beside the backbone's forward pass.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any, Iterator

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from beam_jobs.cli.errors import UserError
from beam_jobs.images.decode import resize_one
from beam_jobs.sources.elements import ModelInput
from schemas import record

TRAIN = record.SPLITS[0]


@dataclasses.dataclass(frozen=True)
class AugmentPolicy:
    """What an augmented view may do to an image; recorded in the manifest as `views.policy`."""

    name: str
    flip: float  # probability of a left-right flip
    min_area: float  # the crop keeps this much of the image's area at least (up to all of it)
    aspect: tuple[float, float]  # range of the crop's width/height ratio (log-uniform)
    brightness: float  # pixel values scaled by a factor in [1 - b, 1 + b]
    contrast: float  # deviations from the image's mean scaled by a factor in [1 - c, 1 + c]
    mirror_allowed: bool = True  # whether --mirror_views may be combined with it

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "flip_probability": self.flip,
                "crop": {"area": [self.min_area, 1.0], "aspect": list(self.aspect),
                         "resample": "bilinear"},
                "brightness": self.brightness, "contrast": self.contrast,
                "seed": "sha256(image_id/view)"}


# default: photos and clothes, whose class survives a mirror.  no_flip: digits and text,
# where a mirrored "2" or "b" is another class (or none), so neither views nor TTA flip.
_DEFAULT = AugmentPolicy("default", flip=0.5, min_area=0.80, aspect=(3 / 4, 4 / 3),
                         brightness=0.15, contrast=0.15)
POLICIES: dict[str, AugmentPolicy] = {
    "default": _DEFAULT,
    "no_flip": dataclasses.replace(_DEFAULT, name="no_flip", flip=0.0, mirror_allowed=False),
}


def policy_named(name: str, mirror: bool) -> AugmentPolicy:
    """The policy of `--augment_policy`, refusing a mirror the policy forbids."""
    if name not in POLICIES:
        raise UserError(f"--augment_policy={name} is not one of {', '.join(POLICIES)}.")
    policy = POLICIES[name]
    if mirror and not policy.mirror_allowed:
        raise UserError(f"--mirror_views mirrors images, which --augment_policy={name} "
                        f"forbids (mirroring may change the class); drop one of them.")
    return policy


def views_manifest(augment_views: int, mirror: bool, policy: AugmentPolicy) -> dict[str, Any]:
    """manifest["views"]: what the run's records beyond view 0 are."""
    return {"augment_views": augment_views, "mirror": mirror, "policy": policy.describe()}


def view_rng(image_id: str, view: int) -> np.random.Generator:
    """The random state of one view of one image: PCG64 seeded from SHA-256, stable across
    processes, machines and numpy versions (unlike Python's salted `hash`)."""
    digest = hashlib.sha256(f"{image_id}/{view}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def square_input(item: ModelInput, size: int, resize_policy: str) -> np.ndarray:
    """The S×S×3 pixels the backbone is fed for view 0 (native-size images enlarged with the
    inference stage's own resize, which tests/test_inference.py holds to the serving one)."""
    if item.image.shape == (size, size, 3):
        return item.image
    return resize_one(item.image, size, resize_policy)


def _crop_box(rng: np.random.Generator, size: int,
              policy: AugmentPolicy) -> tuple[float, float, float, float]:
    """A random-resized-crop box (left, top, right, bottom) in pixels, sub-pixel placed."""
    area = rng.uniform(policy.min_area, 1.0) * size * size
    aspect = math.exp(rng.uniform(math.log(policy.aspect[0]), math.log(policy.aspect[1])))
    width = min(float(size), math.sqrt(area * aspect))
    height = min(float(size), math.sqrt(area / aspect))
    left = rng.uniform(0.0, size - width)
    top = rng.uniform(0.0, size - height)
    return left, top, left + width, top + height


def augment(square: np.ndarray, image_id: str, view: int, policy: AugmentPolicy,
            mean: float | None = None) -> np.ndarray:
    """uint8 [S, S, 3] → one augmented view of it, uint8 [S, S, 3], the same on every call.

    `mean` is the input's mean grey level (computed here when not given; `views_of` computes
    it once for all of an image's views).

    Every random number is drawn whatever the policy, in one order, so a policy changes only
    what its own parameters govern.
    """
    from PIL import Image

    rng = view_rng(image_id, view)
    size = square.shape[0]
    mean = float(square.mean()) if mean is None else mean
    flip = rng.random() < policy.flip
    box = _crop_box(rng, size, policy)
    brightness = rng.uniform(1.0 - policy.brightness, 1.0 + policy.brightness)
    contrast = rng.uniform(1.0 - policy.contrast, 1.0 + policy.contrast)
    image = Image.fromarray(square).resize((size, size), Image.Resampling.BILINEAR, box=box)
    if flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    # Brightness and contrast are one affine map of the pixel value (contrast around the
    # input's mean grey level): a 256-entry table applied by Pillow, 8x cheaper than in numpy.
    levels = (np.arange(256, dtype=np.float64) - mean) * contrast + mean
    table = np.clip(np.rint(levels * brightness), 0, 255).astype(np.uint8).tolist()
    return np.asarray(image.point(table * 3))


def mirror(square: np.ndarray) -> np.ndarray:
    """Left-right mirror, contiguous (the backbone batches stack it)."""
    return np.ascontiguousarray(square[:, ::-1])


def views_of(item: ModelInput, size: int, resize_policy: str, augment_views: int,
             policy: AugmentPolicy, with_mirror: bool) -> list[ModelInput]:
    """The image itself (unchanged), its mirror when asked, and on the train split its
    `augment_views` augmented views 1..K."""
    wanted = augment_views if item.split == TRAIN else 0
    if not wanted and not with_mirror:
        return [item]
    square = square_input(item, size, resize_policy)
    views = [item]
    if with_mirror:
        views.append(dataclasses.replace(item, image=mirror(square), view=record.MIRROR_VIEW))
    mean = float(square.mean()) if wanted else 0.0
    views.extend(dataclasses.replace(item, image=augment(square, item.image_id, v, policy, mean),
                                     view=v) for v in range(1, wanted + 1))
    return views


class _AddViews(beam.DoFn):
    def __init__(self, size: int, resize_policy: str, augment_views: int,
                 policy: AugmentPolicy, with_mirror: bool):
        self._args = (size, resize_policy, augment_views, policy, with_mirror)
        self._views = Metrics.counter("extract", "views")

    def process(self, item: ModelInput) -> Iterator[ModelInput]:
        views = views_of(item, *self._args)
        self._views.inc(len(views) - 1)
        yield from views


class AddViews(beam.PTransform):
    """ModelInput (view 0) → itself plus its views, each a ModelInput with its `view` index;
    the identity when no view is asked for."""

    def __init__(self, size: int, resize_policy: str, augment_views: int,
                 policy: AugmentPolicy, with_mirror: bool):
        super().__init__()
        self._add = _AddViews(size, resize_policy, augment_views, policy, with_mirror)
        self._identity = not augment_views and not with_mirror

    def expand(self, inputs):
        if self._identity:
            return inputs
        return inputs | beam.ParDo(self._add)
