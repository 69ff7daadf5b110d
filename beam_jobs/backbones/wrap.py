"""Wrap a brought backbone (hub handle, SavedModel, `.keras`) into the cached contract SavedModel.

The fingerprint names everything that changes the numbers: the preset or handle name, a hash of
the weights' bytes, the input size, the scaling and this wrapper's version.  Two handles that
resolve to the same bytes share a cache entry; new weights behind the same URL get a new one.
"""

from __future__ import annotations

import hashlib

from beam_jobs.backbones import hub
from beam_jobs.cli.errors import UserError


def fingerprint(name: str, digest: str, scaling: str, size: int, dim: int) -> str:
    return f"{name}@sha256:{digest[:16]}-{scaling}.{hub.WRAPPER_VERSION}/{size}px/{dim}d"


def _pooled(outputs):
    """The model's one output as float32 [N, D]; a feature map is average-pooled."""
    import tensorflow as tf

    if isinstance(outputs, dict):
        if len(outputs) != 1:
            raise UserError(f"The backbone returns several outputs ({', '.join(sorted(outputs))}); "
                            f"export a feature-vector model with one output.")
        outputs = next(iter(outputs.values()))
    elif isinstance(outputs, (list, tuple)):
        outputs = outputs[0]
    outputs = tf.cast(outputs, tf.float32)
    if outputs.shape.rank == 4:
        outputs = tf.reduce_mean(outputs, axis=[1, 2])
    elif outputs.shape.rank != 2:
        outputs = tf.reshape(outputs, [tf.shape(outputs)[0], -1])
    return outputs


def contract_module(model, call, image_size: int, scaling: str):
    """A tf.Module: uint8 [N,S,S,3] -> scaled float -> model -> transfer_values [N,D]."""
    import tensorflow as tf

    offset, divisor = hub.SCALINGS[scaling]
    spec = tf.TensorSpec([None, image_size, image_size, 3], tf.uint8, name="images")

    @tf.function(input_signature=[spec])
    def serve(images):
        scaled = (tf.cast(images, tf.float32) - offset) / divisor
        return {"transfer_values": _pooled(call(scaled))}

    module = tf.Module()
    module.model = model  # tracks the weights so the saved contract carries them
    module.serve = serve
    return module


def cache_name(text: str) -> tuple[str, str, "hub.Preset", str]:
    """(cache folder name, weights digest, preset, resolved path) for a handle."""
    preset, source = hub.parse(text)
    if preset.scaling not in hub.SCALINGS:
        raise UserError(f"Unknown scaling {preset.scaling!r} for backbone {preset.name}.")
    path = hub.resolve(source)
    digest = hub.weights_digest(path)
    key = f"{preset.name}|{digest}|{preset.image_size}|{preset.scaling}|{hub.WRAPPER_VERSION}"
    return f"{preset.name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}", digest, preset, path


def exporter(preset: "hub.Preset", path: str, digest: str):
    """The export function `backbones.materialise` calls when the cache lacks this backbone."""

    def export(export_dir: str) -> None:
        import numpy as np
        import tensorflow as tf

        from beam_jobs.backbones.entry import write_metadata

        model = hub.load_source(path)
        call, stated_size = hub.model_call(model)
        size = preset.image_size or stated_size or hub.DEFAULT_IMAGE_SIZE
        module = contract_module(model, call, size, preset.scaling)
        probe = module.serve(tf.constant(np.zeros((1, size, size, 3), np.uint8)))
        dim = int(probe["transfer_values"].shape[-1])
        tf.saved_model.save(module, export_dir, signatures={"serving_default": module.serve})
        write_metadata(export_dir, preset.name, size, dim,
                       fingerprint(preset.name, digest, preset.scaling, size, dim))

    return export
