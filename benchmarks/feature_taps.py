"""Which inner layers of the embedded backbone to append to its transfer values (issue 15).

    python benchmarks/feature_taps.py --workdir=/tmp/taps                      # 15k/5k/10k
    python benchmarks/feature_taps.py --workdir=/tmp/taps --variants=final,spatial

One forward pass of EfficientNet-Lite0 (the exported port, BatchNorm folded, as the
`efficientnet_lite0*` backbones run it) over Fashion-MNIST images enlarged to 224 as the
extract job enlarges them, keeping every candidate tap at once (cached in the workdir); then,
per variant (a `+`-joined list of taps), the default `tv-train` head (trainer.train.heads with
TrainConfig's defaults, z-scored on the train rows, early stopping on validation) and its
test accuracy.  The baseline, run side by side, is `final`: the plain backbone's 1280 values.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
TAPS = {  # name → (layer of the folded port, grid): 1 = global average, 2 = a 2×2 grid
    "b10": ("blocks_10_add", 1),
    "b10_grid2": ("blocks_10_add", 2),
    "b14": ("blocks_14_add", 1),
    "b15proj_grid2": ("blocks_15_project_conv", 2),
    "final_grid2": ("bn1_relu6", 2),
}
VARIANTS = {  # name → taps after `final`
    "final": [],
    "multi": ["b10"],
    "final+b14": ["b14"],
    "final+b10_grid2": ["b10_grid2"],
    "final+b15proj_grid2": ["b15proj_grid2"],
    "final+final_grid2": ["final_grid2"],
    "spatial": ["b10_grid2", "b15proj_grid2"],
}


def read_idx(name: str) -> np.ndarray:
    with gzip.open(os.path.join(FASHION_MNIST, name)) as f:
        data = f.read()
    if "labels" in name:
        return np.frombuffer(data, np.uint8, offset=8)
    return np.frombuffer(data, np.uint8, offset=16).reshape(-1, 28, 28)


def features(images: np.ndarray) -> dict[str, np.ndarray]:
    """Every tap of every image from one forward pass, batch 64."""
    import keras
    import tensorflow as tf

    from beam_jobs.backbones import efficientnet_lite as lite
    from beam_jobs.backbones.pth_reader import read_state_dict
    from beam_jobs.images.decode import resize_to_square

    port = lite.build_model(read_state_dict(lite.verified_weights_path()), include_top=True,
                            fold_batchnorm=True)
    outputs = {"final": port.get_layer("avg_pool").output}
    for name, (layer, grid) in TAPS.items():
        output = port.get_layer(layer).output
        outputs[name] = (keras.layers.GlobalAveragePooling2D()(output) if grid == 1
                         else lite.grid_pool(output, grid))
    model = keras.Model(port.input, outputs)

    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.uint8)])
    def run(batch):
        squares = resize_to_square(batch, lite.IMAGE_SIZE)
        return model((tf.cast(squares, tf.float32) - lite.PIXEL_MEAN) / lite.PIXEL_SCALE,
                     training=False)

    parts: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
    for start in range(0, len(images), 64):
        out = run(images[start:start + 64, :, :, None])
        for name in outputs:
            parts[name].append(out[name].numpy())
    return {name: np.concatenate(values) for name, values in parts.items()}


def head_accuracy(x: np.ndarray, y: np.ndarray, n_train: int, n_val: int) -> tuple[float, float]:
    """The default tv-train head on z-scored features: (validation, test) accuracy."""
    import keras

    from trainer.train.fit import loss
    from trainer.train.config import TrainConfig
    from trainer.train.heads import build_model

    config = TrainConfig(seed=42)
    keras.utils.set_random_seed(config.seed)
    train, val, test = slice(0, n_train), slice(n_train, n_train + n_val), slice(n_train + n_val,
                                                                                  None)
    model = build_model(config, x.shape[1], 10, x[train].mean(0), x[train].var(0))
    model.compile(keras.optimizers.Adam(config.learning_rate), loss(config, 10),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    model.fit(x[train], y[train], validation_data=(x[val], y[val]), epochs=config.epochs,
              batch_size=config.batch_size, verbose=0, callbacks=[keras.callbacks.EarlyStopping(
                  "val_accuracy", patience=config.patience, mode="max",
                  restore_best_weights=True)])
    return (float(model.evaluate(x[val], y[val], verbose=0)[1]),
            float(model.evaluate(x[test], y[test], verbose=0)[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="caches the features (features.npz)")
    parser.add_argument("--train", type=int, default=15000, help="first N of the train part")
    parser.add_argument("--validation", type=int, default=5000, help="the next N")
    parser.add_argument("--test", type=int, default=10000, help="first N of t10k")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    cache = os.path.join(args.workdir, f"features-{args.train}-{args.validation}-{args.test}.npz")
    if not os.path.exists(cache):
        n = args.train + args.validation
        images = np.concatenate([read_idx("train-images-idx3-ubyte.gz")[:n],
                                 read_idx("t10k-images-idx3-ubyte.gz")[:args.test]])
        labels = np.concatenate([read_idx("train-labels-idx1-ubyte.gz")[:n],
                                 read_idx("t10k-labels-idx1-ubyte.gz")[:args.test]])
        start = time.perf_counter()
        values = features(images)
        print(f"backbone: {len(images)} images, {time.perf_counter() - start:.0f} s", flush=True)
        os.makedirs(args.workdir, exist_ok=True)
        np.savez(cache, labels=labels, **values)
    stored = np.load(cache)
    print(f"\n{'variant':24s} {'dim':>5s} {'val acc':>8s} {'test acc':>9s} {'vs final':>9s} "
          f"{'s':>5s}", flush=True)
    baseline = None
    for name in args.variants.split(","):
        x = np.concatenate([stored[part] for part in ["final", *VARIANTS[name]]], axis=1)
        start = time.perf_counter()
        val, test = head_accuracy(x, stored["labels"], args.train, args.validation)
        baseline = baseline or test
        print(f"{name:24s} {x.shape[1]:5d} {val:8.4f} {test:9.4f} {test - baseline:+9.4f} "
              f"{time.perf_counter() - start:5.0f}", flush=True)


if __name__ == "__main__":
    main()
