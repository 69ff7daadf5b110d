"""`python -m trainer.audit` = `tv-audit`."""

import sys

from beam_jobs.cli import main
from trainer.audit import run

sys.exit(main(run))
