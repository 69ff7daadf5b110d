"""Backbone registry: a name or handle becomes one callable contract.

Every backbone is materialised as a SavedModel whose `serving_default` signature takes
`images: uint8[N, S, S, 3]` and returns `{"transfer_values": float32[N, D]}`, preprocessing
included.  That keeps the backbone's input size and scaling in one place (its entry) and lets
Beam workers and the serving export load it with plain `tf.saved_model.load`, no Keras needed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
from typing import Callable, Optional

import numpy as np

from beam_jobs.backbones.entry import (  # noqa: F401 - also backbones.X
    METADATA_FILE,
    SIGNATURE_INPUT,
    SIGNATURE_OUTPUT,
    BackboneEntry,
    write_metadata,
)
from beam_jobs.cli.errors import UserError

_REGISTRY: dict[str, BackboneEntry] = {}
_LOADED: dict[str, object] = {}
_LOCK = threading.Lock()


def register(entry: BackboneEntry) -> None:
    _REGISTRY[entry.name] = entry


def registered_names() -> list[str]:
    return sorted(_REGISTRY)


def cache_dir() -> str:
    root = os.environ.get("TV_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "transfer-values")
    return os.path.join(root, "backbones")


@dataclasses.dataclass(frozen=True)
class Backbone:
    """A loaded-on-demand backbone; cheap to pickle because it holds only a path and metadata."""

    name: str
    fingerprint: str
    image_size: int
    feature_dim: int
    saved_model_dir: str

    def signature(self):
        """The SavedModel's contract function, loaded once per process and shared by threads."""
        with _LOCK:
            loaded = _LOADED.get(self.saved_model_dir)
            if loaded is None:
                import tensorflow as tf

                loaded = tf.saved_model.load(self.saved_model_dir)
                _LOADED[self.saved_model_dir] = loaded
        return loaded.signatures["serving_default"]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (
                self.image_size, self.image_size, 3):
            raise ValueError(
                f"{self.name} expects uint8 [N, {self.image_size}, {self.image_size}, 3], "
                f"got {images.dtype} {list(images.shape)}")
        import tensorflow as tf

        out = self.signature()(**{SIGNATURE_INPUT: tf.constant(images)})
        return out[SIGNATURE_OUTPUT].numpy()


def _fingerprint(entry: BackboneEntry) -> str:
    return f"{entry.name}@{entry.version}/{entry.image_size}px/{entry.feature_dim}d"


def materialise(folder: str, export: Callable[[str], None]) -> str:
    """Build a contract SavedModel once into the cache; concurrent builders race harmlessly.

    `export` writes the SavedModel and its metadata (`write_metadata`) into an empty folder.
    """
    target = os.path.join(cache_dir(), folder)
    if os.path.exists(os.path.join(target, "saved_model.pb")):
        return target
    os.makedirs(cache_dir(), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{folder}-", dir=cache_dir())
    try:
        export_dir = os.path.join(staging, "model")
        export(export_dir)
        try:
            os.rename(export_dir, target)  # atomic; loses harmlessly to a concurrent builder
        except OSError:
            if not os.path.exists(os.path.join(target, "saved_model.pb")):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _materialise(entry: BackboneEntry) -> str:
    def export(export_dir: str) -> None:
        entry.export(export_dir)
        write_metadata(export_dir, entry.name, entry.image_size, entry.feature_dim,
                       _fingerprint(entry))

    key = hashlib.sha256(_fingerprint(entry).encode()).hexdigest()[:16]
    folder = re.sub(r"[^A-Za-z0-9_.-]", "_", entry.name)  # `efficientnet_lite0:multi` -> `_multi`
    return materialise(f"{folder}-{key}", export)


def _metadata(path: str) -> Optional[dict]:
    meta_path = os.path.join(path, "assets.extra", METADATA_FILE)
    if not os.path.exists(meta_path):
        return None
    with open(meta_path) as f:
        return json.load(f)


def _from_saved_model(path: str) -> Optional[Backbone]:
    """A contract SavedModel as a `Backbone`; None when the folder does not follow the contract."""
    meta = _metadata(path)
    if meta is not None:
        return Backbone(meta["name"], meta["fingerprint"], int(meta["image_size"]),
                        int(meta["feature_dim"]), path)
    import tensorflow as tf

    sig = tf.saved_model.load(path).signatures.get("serving_default")
    if sig is None:
        return None
    spec = sig.structured_input_signature[1].get(SIGNATURE_INPUT)
    out = sig.structured_outputs.get(SIGNATURE_OUTPUT)
    if (spec is None or out is None or spec.dtype != tf.uint8 or spec.shape.rank != 4
            or spec.shape[1] is None):
        return None
    digest = hashlib.sha256(open(os.path.join(path, "saved_model.pb"), "rb").read()).hexdigest()
    name = os.path.basename(os.path.normpath(path))
    size, dim = int(spec.shape[1]), int(out.shape[-1])
    return Backbone(name, f"{name}@sha256:{digest[:16]}/{size}px/{dim}d", size, dim, path)


def _wrapped(handle: str) -> Backbone:
    """A hub handle, preset, SavedModel or `.keras` file, wrapped into the cached contract."""
    from beam_jobs.backbones import wrap

    folder, digest, preset, path = wrap.cache_name(handle)
    backbone = _from_saved_model(materialise(folder, wrap.exporter(preset, path, digest)))
    assert backbone is not None, "a wrapped backbone always carries its metadata"
    return backbone


def load(name_or_handle: str) -> Backbone:
    """Resolve a registered name, a preset, a hub handle or a model file to a `Backbone`.

    Forms: `efficientnet_lite0` (embedded; `efficientnet_lite0:multi` appends a mid-level
    stage, `efficientnet_lite0:spatial` two stages pooled over a 2×2 grid); `mobilenet_v2`, `inception_v3` (presets, fetched from TF Hub); `PRESET=SOURCE` (a preset's size and scaling on another copy of its weights);
    `https://tfhub.dev/…`, `https://www.kaggle.com/models/…`, `gs://…`, a local SavedModel
    folder or a `.keras` file (TF Hub's [0, 1] scaling, the model's own input size or 224).
    """
    from beam_jobs.backbones import hub

    if name_or_handle in _REGISTRY:
        return _from_saved_model(_materialise(_REGISTRY[name_or_handle]))
    if os.path.isdir(name_or_handle) and os.path.exists(
            os.path.join(name_or_handle, "saved_model.pb")):
        contract = _from_saved_model(name_or_handle)
        if contract is not None:
            return contract
    if hub.is_handle(name_or_handle):
        return _wrapped(name_or_handle)
    raise UserError(
        f"Unknown backbone {name_or_handle!r}: use one of "
        f"{', '.join(registered_names() + sorted(hub.PRESETS))}, a TF Hub or Kaggle handle, "
        f"a gs:// or local SavedModel folder, or a .keras file.")


def _register_builtins() -> None:
    from beam_jobs.backbones import efficientnet_lite

    register(efficientnet_lite.ENTRY)
    register(efficientnet_lite.MULTI_ENTRY)
    register(efficientnet_lite.SPATIAL_ENTRY)


_register_builtins()
