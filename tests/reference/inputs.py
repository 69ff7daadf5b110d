"""The inputs behind the committed reference outputs, shared by the regeneration script and the
live `make parity` tests, so both feed the reference exactly what the committed file holds."""

from __future__ import annotations

import hashlib

import numpy as np

# Real photos shipped with installed packages, and the ImageNet class each is known to be.
PHOTO_NAMES = ("grace_hopper", "chelsea", "coffee")
KNOWN_CLASSES = {"grace_hopper": 652, "chelsea": 285, "coffee": 967}  # uniform, cat, espresso
RANDOM_SEED = 0
RANDOM_COUNT = 2
IMAGE_SIZE = 224  # efficientnet_lite0's input; the registry entry holds the same number


def load_photo(name: str) -> np.ndarray:
    """A real photo as RGB uint8, resized bilinear to the backbone's input size."""
    from PIL import Image

    if name == "grace_hopper":
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
            image = Image.open(f).convert("RGB")
    else:
        import skimage.data

        image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    resized = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def random_images() -> np.ndarray:
    """Uniform noise images; regenerated from the seed (the reference file keeps their digest)."""
    rng = np.random.default_rng(RANDOM_SEED)
    return rng.integers(0, 256, (RANDOM_COUNT, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
