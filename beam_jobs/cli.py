"""What every console script shares: quiet TensorFlow, the exit-code contract, the TFT guard."""

from __future__ import annotations

import atexit
import gc
import logging
import os
import sys
from typing import Callable, Sequence

from beam_jobs.errors import UserError

EXIT_USAGE = 2


def quiet_tensorflow() -> None:
    """Silence TensorFlow's start-up noise unless the user asked for it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def guard_exit_segfault() -> None:
    """tensorflow-transform leaves objects whose finalizers crash the interpreter at exit
    (exit code 139 after all work succeeded); freezing the heap skips that last collection."""
    atexit.register(gc.freeze)


def main(run: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> int:
    """Run a command; a `UserError` becomes one sentence on stderr and exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv
    quiet_tensorflow()
    guard_exit_segfault()
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run(argv)
    except UserError as err:
        if verbose:
            raise
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    return 0
