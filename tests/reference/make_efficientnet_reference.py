"""Regenerate the committed PyTorch reference outputs the EfficientNet-Lite0 port is tested against.

Why committed outputs: PyPI's torch is a CUDA build of several GB, and `make test` must stay
light on a fresh machine.  So the reference (`efficientnet-lite-pytorch` on the pinned
checkpoint) runs once, here, and its numbers travel with the repository; the Keras port is
compared to them in every test run, and `make parity` compares it to torch itself.

    pip install -e '.[parity]'        # torch (CUDA build from PyPI) + the reference package
    python tests/reference/make_efficientnet_reference.py

Writes, next to this script:
- efficientnet_lite0.npz: the photos (uint8, as fed), the seed and digest of the random arrays,
  and the reference's pooled features and ImageNet logits for each input;
- efficientnet_lite0_state_dict.json: shape, dtype and sha256 of every tensor `torch.load` reads
  from the pinned checkpoint (what `pth_reader` must reproduce without torch);
- pth_{zip,legacy}.pth + pth_expected.npz: tiny checkpoints with views, strides and odd dtypes,
  saved by torch in both of its layouts, and the arrays they hold.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from tests.reference.inputs import (PHOTO_NAMES, RANDOM_COUNT, RANDOM_SEED,  # noqa: E402
                                    digest, load_photo, random_images)


def reference_outputs(model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features and logits of the reference for uint8 NHWC images."""
    import torch

    from beam_jobs.backbones import efficientnet_lite

    inputs = efficientnet_lite.preprocess(images).transpose(0, 3, 1, 2)
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(inputs))
        pooled = model.extract_features(x).mean(dim=(2, 3))
        logits = model(x)
    return pooled.numpy().astype(np.float32), logits.numpy().astype(np.float32)


def write_model_reference(weights: str) -> None:
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights).eval()
    photos = np.stack([load_photo(name) for name in PHOTO_NAMES])
    randoms = random_images()
    features, logits = reference_outputs(model, np.concatenate([photos, randoms]))
    np.savez_compressed(os.path.join(HERE, "efficientnet_lite0.npz"),
                        photo_names=np.array(PHOTO_NAMES), photos=photos,
                        random_seed=RANDOM_SEED, random_count=RANDOM_COUNT,
                        random_sha256=digest(randoms), features=features, logits=logits)


def write_state_dict_reference(weights: str) -> None:
    import torch

    state = torch.load(weights, map_location="cpu")
    table = {key: {"shape": list(t.shape), "dtype": str(t.numpy().dtype),
                   "sha256": digest(t.numpy())} for key, t in state.items()}
    with open(os.path.join(HERE, "efficientnet_lite0_state_dict.json"), "w") as f:
        json.dump(table, f, indent=0)


def write_tiny_checkpoints() -> None:
    import torch

    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    saved = {"transposed": base.t(), "slice": base[1:, 2:], "half": torch.ones(3).half(),
             "bfloat16": torch.tensor([1.5, -2.25], dtype=torch.bfloat16),
             "long": torch.tensor([7, -1]), "flags": torch.tensor([True, False]),
             "empty": torch.zeros(0, 3), "scalar": torch.tensor(3.0)}
    for layout, zip_format in (("zip", True), ("legacy", False)):
        torch.save(saved, os.path.join(HERE, f"pth_{layout}.pth"),
                   _use_new_zipfile_serialization=zip_format)
    # bfloat16 has no numpy dtype: pth_reader widens it to float32, as torch's .float() does.
    expected = {key: (t.float() if t.dtype == torch.bfloat16 else t).numpy()
                for key, t in saved.items()}
    np.savez(os.path.join(HERE, "pth_expected.npz"), **expected)


def main() -> None:
    from beam_jobs.backbones import efficientnet_lite

    weights = efficientnet_lite.verified_weights_path()
    write_model_reference(weights)
    write_state_dict_reference(weights)
    write_tiny_checkpoints()
    print(f"reference outputs written to {HERE}")


if __name__ == "__main__":
    main()
