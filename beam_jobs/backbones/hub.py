"""Backbones a user brings: TF Hub / Kaggle handles, gs:// or local SavedModels, `.keras` files.

Whatever the source, it is wrapped once into the same contract SavedModel as the embedded
default (`serving_default(images: uint8[N,S,S,3]) -> {"transfer_values": float32[N,D]}`, the
preset's scaling inside) and cached, so Beam workers and the serving export never need TF Hub,
Keras or the network: they `tf.saved_model.load` a local folder.

Why a preset owns size and scaling: the weights only mean something on the inputs they were
trained on.  TF Hub's image models all take [0, 1] RGB at their documented size (the
"common image input" convention); Keras Applications files mostly want [-1, 1].

Handles are resolved with `tensorflow_hub.resolve`, which downloads `https://` handles into
`TFHUB_CACHE_DIR` (its own cache, lock files and all) and passes `gs://` and local folders
through.  Importing this module stays cheap: no TensorFlow until a backbone is built.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import sys
import types
from typing import Callable, Optional

from beam_jobs.cli.errors import UserError

# Version of the wrapping code below; part of every wrapped backbone's fingerprint.
WRAPPER_VERSION = "w1"
DEFAULT_IMAGE_SIZE = 224

# name -> (offset, divisor): pixel' = (pixel - offset) / divisor
SCALINGS = {
    "unit": (0.0, 255.0),         # [0, 1], TF Hub's convention
    "symmetric": (127.5, 127.5),  # [-1, 1], Keras Applications' mobilenet/inception convention
    "lite": (127.0, 128.0),       # EfficientNet-Lite's (x - 127) / 128
}


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named backbone whose weights live elsewhere: where, and which inputs they expect."""

    name: str
    source: str  # default handle; `NAME=OTHER_SOURCE` swaps it (a mirror, a downloaded copy)
    image_size: int
    scaling: str


PRESETS = {p.name: p for p in (
    # Model cards: "The input images are expected to have color values in the range [0,1]".
    Preset("mobilenet_v2",
           "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5", 224, "unit"),
    Preset("inception_v3",
           "https://tfhub.dev/google/imagenet/inception_v3/feature_vector/5", 299, "unit"),
    Preset("efficientnet_lite0_hub",
           "https://tfhub.dev/tensorflow/efficientnet/lite0/feature-vector/2", 224, "unit"),
)}

_KAGGLE = re.compile(r"^https://www\.kaggle\.com/models/([^/]+)/([^/]+)/([^/]+)/([^/]+)/(\d+)/?$")


def is_handle(text: str) -> bool:
    """Whether `text` names something this module can load (a preset or a source)."""
    if text.partition("=")[0] in PRESETS:
        return True
    return bool(_is_remote(text) or text.endswith(".keras") or
                os.path.exists(os.path.join(text, "saved_model.pb")))


def _is_remote(handle: str) -> bool:
    return handle.startswith(("http://", "https://", "gs://"))


def parse(text: str) -> tuple[Preset, str]:
    """`mobilenet_v2`, `mobilenet_v2=SOURCE` or a bare SOURCE -> (preset, source)."""
    name, sep, source = text.partition("=")
    if name in PRESETS:
        preset = PRESETS[name]
        return preset, (source if sep else preset.source)
    return Preset(_name_of(text), text, 0, "unit"), text


def _name_of(handle: str) -> str:
    """A readable name for an anonymous handle: a file's stem, a folder's or URL's last parts."""
    parts = [p for p in re.split(r"[/\\]", handle.rstrip("/")) if p and not p.endswith(":")]
    if not _is_remote(handle):
        parts = parts[-1:]
    tail = [p for p in parts[-4:] if not p.isdigit()][-2:] or ["backbone"]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(tail)).removesuffix(".keras")


def kaggle_download_url(handle: str) -> str:
    """Kaggle model page URL -> the archive URL TF Hub's compressed-file resolver can fetch."""
    match = _KAGGLE.match(handle)
    if not match:
        return handle
    owner, model, framework, variation, version = match.groups()
    return (f"https://www.kaggle.com/api/v1/models/{owner}/{model}/{framework}/"
            f"{variation}/{version}/download")


def import_tensorflow_hub():
    """`import tensorflow_hub`, tolerating setuptools >= 81 (no `pkg_resources`).

    tensorflow_hub 0.16.1 imports `pkg_resources.parse_version` only to check the TF version;
    a stand-in holding `packaging.version.parse` is put in place for that import and removed
    right after, so nothing else sees it.
    """
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        from packaging.version import parse

        sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse)
        try:
            import tensorflow_hub
        finally:
            sys.modules.pop("pkg_resources", None)
        return tensorflow_hub
    import tensorflow_hub

    return tensorflow_hub


def resolve(source: str) -> str:
    """A handle -> a local path (downloaded into TFHUB_CACHE_DIR when remote)."""
    if source.endswith(".keras") or not _is_remote(source):
        if not os.path.exists(source):
            raise UserError(f"The backbone source {source} does not exist.")
        return source
    hub = import_tensorflow_hub()
    try:
        return hub.resolve(kaggle_download_url(source))
    except Exception as err:  # network, HTTP status, bad archive: all fixable by the user
        raise UserError(f"Could not fetch the backbone {source} ({type(err).__name__}: {err}); "
                        f"check the handle and the network, or point TFHUB_CACHE_DIR at a "
                        f"cache that holds it.") from None


def weights_digest(path: str) -> str:
    """SHA-256 over every file of a SavedModel folder (names and bytes) or of one file."""
    import tensorflow as tf

    digest = hashlib.sha256()
    if tf.io.gfile.isdir(path):
        files = sorted(os.path.relpath(os.path.join(root, f), path)
                       for root, _, names in tf.io.gfile.walk(path) for f in names)
    else:
        files, path = [os.path.basename(path)], os.path.dirname(path)
    for relative in files:
        digest.update(relative.encode() + b"\0")
        with tf.io.gfile.GFile(os.path.join(path, relative), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def load_source(path: str):
    """The model behind a resolved path: a Keras model for `.keras`, else a loaded SavedModel."""
    if path.endswith(".keras"):
        import keras

        return keras.saving.load_model(path, compile=False)
    import tensorflow as tf

    return tf.saved_model.load(path)


def model_call(model) -> tuple[Callable, Optional[int]]:
    """How to call a model on float images, and its input size if the model states one."""
    if hasattr(model, "input_shape") and callable(model):  # Keras
        size = model.input_shape[1]
        return (lambda x: model(x, training=False)), size
    if callable(model):  # a TF2 SavedModel with __call__, as TF Hub's image models are
        return model, None
    for endpoint in ("serve",):  # what Keras 3 `model.export` writes
        if hasattr(model, endpoint):
            return getattr(model, endpoint), None
    signature = model.signatures.get("serving_default")
    if signature is None:
        raise UserError("The backbone SavedModel has neither __call__ nor a serving_default "
                        "signature to call.")
    (name, spec), = signature.structured_input_signature[1].items()
    size = spec.shape[1] if spec.shape.rank == 4 else None
    return (lambda x: signature(**{name: x})), size
