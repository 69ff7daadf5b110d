"""`tv-predict`, also `python -m trainer.serve`: classify images with an exported model.

The command module is named, not imported, here: `launch` filters TensorFlow's start-up banner
first, then imports it (see beam_jobs.cli.launch).
"""

import sys

from beam_jobs.cli.launch import launch


def console() -> int:
    """The `tv-predict` console script (setup.py)."""
    return launch("trainer.serve.predict")


if __name__ == "__main__":
    sys.exit(console())
