"""`tv-audit`: label issues, near duplicates and outliers of committed runs (trainer.audit.cli).

`run` is imported here so that the console script's quiet import (beam_jobs.cli.launch) also
covers TensorFlow's start-up banner; faiss and cleanlab load only when the audit runs.
"""

from trainer.audit.cli import run

__all__ = ["run"]
