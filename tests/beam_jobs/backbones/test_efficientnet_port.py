"""The embedded EfficientNet-Lite0 port agrees with the PyTorch reference, to the numbers.

torch and the reference package are test-only dependencies: without them this module skips.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
reference_package = pytest.importorskip("efficientnet_lite_pytorch")

from beam_jobs import backbones  # noqa: E402
from beam_jobs.backbones import efficientnet_lite  # noqa: E402
from beam_jobs.backbones.pth_reader import read_state_dict  # noqa: E402
from beam_jobs.cli.errors import UserError  # noqa: E402

FEATURE_TOLERANCE = 1e-4  # observed about 1e-5 on pooled features of magnitude up to ~6
GRACE_HOPPER_CLASS = 652  # "military uniform", TensorFlow's label_image example result


@pytest.fixture(scope="module")
def weights() -> str:
    return efficientnet_lite.weights_path()


@pytest.fixture(scope="module")
def state_dict(weights) -> dict[str, np.ndarray]:
    return read_state_dict(weights)


@pytest.fixture(scope="module")
def reference(weights):
    model = reference_package.EfficientNet.from_pretrained("efficientnet-lite0",
                                                           weights_path=weights)
    return model.eval()


@pytest.fixture(scope="module")
def keras_features(state_dict):
    return efficientnet_lite.build_model(state_dict, include_top=False)


@pytest.fixture(scope="module")
def keras_classifier(state_dict):
    return efficientnet_lite.build_model(state_dict, include_top=True)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One cold `load()` into a fresh cache, shared by the SavedModel tests."""
    cache = str(tmp_path_factory.mktemp("tv-cache"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TV_CACHE_DIR", cache)
        backbone = backbones.load("efficientnet_lite0")
    return cache, backbone


def reference_forward(reference, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features and logits of the reference for preprocessed NHWC float32 images."""
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        pooled = reference.extract_features(x).mean(dim=(2, 3))
        logits = reference(x)
    return pooled.numpy(), logits.numpy()


def photo(name: str) -> np.ndarray:
    """A real photo shipped with an installed package, RGB uint8 resized bilinear to 224."""
    from PIL import Image

    if name == "grace_hopper":
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
            image = Image.open(f).convert("RGB")
    else:
        data = pytest.importorskip("skimage.data")
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
    size = efficientnet_lite.IMAGE_SIZE
    return np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.uint8)


def test_pth_reader_matches_torch_load(weights, state_dict):
    expected = torch.load(weights, map_location="cpu")
    assert list(state_dict) == list(expected)
    for key, tensor in expected.items():
        want = tensor.numpy()
        assert state_dict[key].shape == want.shape, key
        assert state_dict[key].dtype == want.dtype, key
        np.testing.assert_array_equal(state_dict[key], want, err_msg=key)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_pth_reader_keeps_views_strides_and_dtypes(tmp_path, zip_format):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    saved = {"transposed": base.t(), "slice": base[1:, 2:], "half": torch.ones(3).half(),
             "bfloat16": torch.tensor([1.5, -2.25], dtype=torch.bfloat16),
             "long": torch.tensor([7, -1]), "flags": torch.tensor([True, False]),
             "empty": torch.zeros(0, 3), "scalar": torch.tensor(3.0)}
    path = tmp_path / "checkpoint.pth"
    torch.save(saved, path, _use_new_zipfile_serialization=zip_format)
    loaded = read_state_dict(str(path))
    for key, tensor in saved.items():
        want = (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
        assert loaded[key].dtype == want.dtype, key
        np.testing.assert_array_equal(loaded[key], want, err_msg=key)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def test_pth_reader_refuses_other_files_and_foreign_classes(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        read_state_dict(str(junk))
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        for part in (0x1950A86A20F9469CFC6C, 1001, {}, _Exploit()):
            pickle.dump(part, f, protocol=2)
    with pytest.raises(ValueError, match="posix.system|nt.system"):
        read_state_dict(str(evil))


def test_pooled_features_match_reference(reference, keras_features):
    rng = np.random.default_rng(0)
    images = np.concatenate([rng.integers(0, 256, (2, 224, 224, 3), dtype=np.uint8),
                             photo("grace_hopper")[None]])
    inputs = efficientnet_lite.preprocess(images)
    expected, _ = reference_forward(reference, inputs)
    actual = keras_features(inputs, training=False).numpy()
    assert actual.shape == (3, efficientnet_lite.FEATURE_DIM)
    assert np.abs(actual - expected).max() < FEATURE_TOLERANCE


@pytest.mark.parametrize("name, known_class", [
    ("grace_hopper", GRACE_HOPPER_CLASS), ("chelsea", 285), ("coffee", 967)])
def test_imagenet_top1_matches_reference_on_real_photos(reference, keras_classifier, exported,
                                                        name, known_class):
    import tensorflow as tf

    image = photo(name)[None]
    _, reference_logits = reference_forward(reference, efficientnet_lite.preprocess(image))
    keras_logits = keras_classifier(efficientnet_lite.preprocess(image), training=False).numpy()
    classify = tf.saved_model.load(exported[1].saved_model_dir).signatures["classify"]
    saved_logits = classify(images=tf.constant(image))["logits"].numpy()
    top1 = {int(np.argmax(logits)) for logits in (reference_logits, keras_logits, saved_logits)}
    assert top1 == {known_class}


def test_saved_model_contract(exported, keras_features, monkeypatch):
    cache, backbone = exported
    assert (backbone.image_size, backbone.feature_dim) == (224, 1280)
    assert os.path.commonpath([cache, backbone.saved_model_dir]) == cache
    images = np.random.default_rng(1).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    transfer_values = backbone(images)
    assert transfer_values.dtype == np.float32 and transfer_values.shape == (2, 1280)
    expected = keras_features(efficientnet_lite.preprocess(images), training=False).numpy()
    assert np.abs(transfer_values - expected).max() < FEATURE_TOLERANCE

    def refuse_to_export(export_dir: str) -> None:
        raise AssertionError("a cached backbone was exported again")

    built_at = os.stat(backbone.saved_model_dir).st_mtime_ns
    entry = dataclasses.replace(efficientnet_lite.ENTRY, export=refuse_to_export)
    monkeypatch.setitem(backbones._REGISTRY, entry.name, entry)
    monkeypatch.setenv("TV_CACHE_DIR", cache)
    again = backbones.load("efficientnet_lite0")
    assert again == backbone
    assert os.stat(again.saved_model_dir).st_mtime_ns == built_at


def test_weights_that_are_not_the_pinned_file_are_refused(tmp_path, monkeypatch):
    other = tmp_path / "efficientnet-lite0-57934424.pth"
    other.write_bytes(b"something else")
    monkeypatch.setattr(efficientnet_lite, "weights_path", lambda: str(other))
    with pytest.raises(UserError, match="not the pinned one"):
        efficientnet_lite.verified_weights_path()


def test_registry_import_stays_light():
    code = ("import sys, beam_jobs.backbones; "
            "assert not {'tensorflow', 'torch', 'keras'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True,
                   cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
