"""`tv-train`, also `python -m trainer.train`: fit, evaluate and export a head.

The command module is named, not imported, here: `launch` filters TensorFlow's start-up banner
first, then imports it (see beam_jobs.cli.launch).
"""

import sys

from beam_jobs.cli.launch import launch


def console() -> int:
    """The `tv-train` console script (setup.py)."""
    return launch("trainer.train.command")


if __name__ == "__main__":
    sys.exit(console())
