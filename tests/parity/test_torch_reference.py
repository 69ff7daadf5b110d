"""The live parity check: the Keras port against PyTorch itself, and the committed reference
outputs against a fresh run of the reference (so a stale file is caught).

Only `make parity` collects this folder (tests/conftest.py keeps it out of `make test`); there
torch is imported plainly, so a missing torch is a loud collection error, never a skip.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from efficientnet_lite_pytorch import EfficientNet

from beam_jobs.backbones import efficientnet_lite
from beam_jobs.backbones.pth_reader import read_state_dict
from tests.reference.inputs import KNOWN_CLASSES, PHOTO_NAMES, load_photo, random_images
from tests.reference.make_efficientnet_reference import reference_outputs

REFERENCE_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "reference", "efficientnet_lite0.npz")
FEATURE_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.concatenate([np.stack([load_photo(name) for name in PHOTO_NAMES]),
                           random_images()])


@pytest.fixture(scope="module")
def live(images) -> tuple[np.ndarray, np.ndarray]:
    weights = efficientnet_lite.verified_weights_path()
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights).eval()
    return reference_outputs(model, images)


def test_pth_reader_matches_torch_load_live():
    weights = efficientnet_lite.weights_path()
    expected = torch.load(weights, map_location="cpu")
    loaded = read_state_dict(weights)
    assert list(loaded) == list(expected)
    for key, tensor in expected.items():
        np.testing.assert_array_equal(loaded[key], tensor.numpy(), err_msg=key)


def test_keras_port_matches_torch_live(images, live):
    state_dict = read_state_dict(efficientnet_lite.weights_path())
    keras_features = efficientnet_lite.build_model(state_dict, include_top=False)
    actual = keras_features(efficientnet_lite.preprocess(images), training=False).numpy()
    assert np.abs(actual - live[0]).max() < FEATURE_TOLERANCE
    known = [KNOWN_CLASSES[name] for name in PHOTO_NAMES]
    assert np.argmax(live[1][:len(known)], axis=1).tolist() == known


def test_committed_reference_is_current(images, live):
    with np.load(REFERENCE_FILE) as stored:
        np.testing.assert_array_equal(stored["photos"], images[:len(PHOTO_NAMES)])
        assert np.abs(stored["features"] - live[0]).max() < 1e-5
        assert np.abs(stored["logits"] - live[1]).max() < 1e-4
