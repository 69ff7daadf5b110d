"""`tv-extract`, also `python -m beam_jobs.extract`: extract transfer values into a committed run.

The command module is named, not imported, here: `launch` filters TensorFlow's start-up banner
first, then imports it (see beam_jobs.cli.launch).
"""

import sys

from beam_jobs.cli.launch import launch


def console() -> int:
    """The `tv-extract` console script (setup.py)."""
    return launch("beam_jobs.extract.pipeline")


if __name__ == "__main__":
    sys.exit(console())
