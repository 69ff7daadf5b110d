"""`tv-retrain`, also `python -m trainer.retrain`: extract new images, train a challenger, promote if better.

The command module is named, not imported, here: `launch` filters TensorFlow's start-up banner
first, then imports it (see beam_jobs.cli.launch).
"""

import sys

from beam_jobs.cli.launch import launch


def console() -> int:
    """The `tv-retrain` console script (setup.py)."""
    return launch("trainer.retrain.command")


if __name__ == "__main__":
    sys.exit(console())
