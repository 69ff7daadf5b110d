"""Write a few Fashion-MNIST test images as PNG files, for `tv-predict` in the demo.

They come from the end of the t10k file, which the demo's default subset does not extract,
so the model has never seen them.
"""

import os
import sys

import numpy as np
from PIL import Image

from beam_jobs.sources.idx import read_bytes, read_idx

LABELS = os.path.join(os.path.dirname(__file__), "fashion_mnist_labels.txt")


def main(data_dir: str, out_dir: str, count: int = 5) -> None:
    images = read_idx(read_bytes(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz")))
    labels = read_idx(read_bytes(os.path.join(data_dir, "t10k-labels-idx1-ubyte.gz")))
    names = open(LABELS).read().split("\n")
    os.makedirs(out_dir, exist_ok=True)
    for index in range(len(images) - count, len(images)):
        name = names[int(labels[index])].replace("/", "-").replace(" ", "_")
        Image.fromarray(np.asarray(images[index])).save(
            os.path.join(out_dir, f"t10k-{index}-{name}.png"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
