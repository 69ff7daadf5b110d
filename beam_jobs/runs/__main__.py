"""`tv-runs`, also `python -m beam_jobs.runs`: list the runs and jobs of an extract output, or gc them.

The command module is named, not imported, here: `launch` filters TensorFlow's start-up banner
first, then imports it (see beam_jobs.cli.launch).
"""

import sys

from beam_jobs.cli.launch import launch


def console() -> int:
    """The `tv-runs` console script (setup.py)."""
    return launch("beam_jobs.runs.command")


if __name__ == "__main__":
    sys.exit(console())
