"""`tv-audit`, also `python -m trainer.audit`: label issues, near duplicates and outliers.

The command module is named, not imported, here: `launch` filters TensorFlow's start-up banner
first, then imports it (see beam_jobs.cli.launch).
"""

import sys

from beam_jobs.cli.launch import launch


def console() -> int:
    """The `tv-audit` console script (setup.py)."""
    return launch("trainer.audit.command")


if __name__ == "__main__":
    sys.exit(console())
