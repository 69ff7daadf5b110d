"""How every console script starts and ends: TensorFlow's start-up banner filtered before
TensorFlow is imported, one log format, the TFT exit guard, and the exit-code contract (flags,
`--config` and `--help` are beam_jobs.cli.flags).

Exit codes: 0 success; 2 a problem the user can fix (bad flag, missing input, unknown backbone,
unwritable output), stated as one sentence on stderr; anything else is a bug and keeps its
traceback. `--verbose` logs at INFO and keeps the traceback of user errors too.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import importlib.util
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from beam_jobs.cli.errors import UserError

EXIT_USAGE = 2
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
VERBOSE_FLAG = "--verbose"

# What TensorFlow's native libraries print at import, before absl logging exists (so
# TF_CPP_MIN_LOG_LEVEL cannot stop it), and the CUDA probe on machines without a GPU.
_TF_STARTUP_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\)"
    r"|^[IWE]\d{4} [\d:. ]+\d+ (port\.cc|cudart_stub\.cc|cuda_platform\.cc|cuda_executor\.cc"
    r"|cuda_dnn\.cc|cuda_fft\.cc|cuda_blas\.cc|cpu_feature_guard\.cc|computation_placer\.cc)"
    r"|^To enable the following instructions: .* rebuild TensorFlow")


def configure_logging(verbose: bool) -> None:
    """One format for every command; WARNING by default, INFO with --verbose."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=LOG_FORMAT,
                        force=True)
    if not verbose:
        for noisy in ("apache_beam", "absl", "tensorflow"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        logging.getLogger("absl").addFilter(_drop_known_library_advice)
        logging.getLogger("apache_beam.runners.portability.local_job_service").addFilter(
            _drop_worker_startup_notes)


def _drop_known_library_advice(record: logging.LogRecord) -> bool:
    """Library advice addressed to us, not to the user (shown with --verbose)."""
    return "passing instance dicts and DatasetMetadata to TFT" not in str(record.msg)


def _drop_worker_startup_notes(record: logging.LogRecord) -> bool:
    """What each Beam worker process logs as it starts (shown with --verbose): it has no
    semi-persistent folder, and it ignores our flags, which are meant for the driver."""
    message = record.getMessage()
    return not ("No semi_persistent_directory" in message
                or "Discarding unparseable args" in message)


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ INFO/WARNING logs (kept when TF_CPP_MIN_LOG_LEVEL is set)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def _filtered_stderr() -> Iterator[None]:
    """Capture fd 2 (native code writes there directly) and replay all but known start-up noise,
    so a real error printed during import still reaches the user."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True):
                if not _TF_STARTUP_NOISE.search(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


def _probe_tensorflow() -> None:
    """Import TensorFlow (if installed) and run its CUDA probe, whose error line is noise too."""
    if importlib.util.find_spec("tensorflow") is not None:
        importlib.import_module("tensorflow").config.list_physical_devices("GPU")


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its start-up banner filtered."""
    with _filtered_stderr():
        _probe_tensorflow()


def _wants_help(argv: Sequence[str]) -> bool:
    return any(arg in ("-h", "--help") for arg in argv)


def import_quietly(module: str, with_tensorflow: bool = True) -> Any:
    """Import a command module, and TensorFlow (which the commands import lazily, later),
    without TF's start-up banner; the CUDA probe runs here too, so its error line is caught."""
    with _filtered_stderr():
        loaded = importlib.import_module(module)
        if with_tensorflow:
            _probe_tensorflow()
    return loaded


def guard_exit_segfault() -> None:
    """tensorflow-transform leaves objects whose finalizers crash the interpreter at exit
    (exit code 139 after all work succeeded); freezing the heap skips that last collection."""
    atexit.register(gc.freeze)


def main(run: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> int:
    """Run a command; a `UserError` becomes one sentence on stderr and exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = VERBOSE_FLAG in argv
    quiet_tensorflow()
    guard_exit_segfault()
    configure_logging(verbose)
    if not verbose and "tensorflow" not in sys.modules and not _wants_help(argv):
        import_tensorflow_quietly()  # `python -m …` paths, where launch() did not run
    try:
        run(argv)
    except UserError as err:
        if verbose:
            raise
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def launch(module: str) -> int:
    """Console-script body: quiet TensorFlow *before* the command module imports it, then
    run that module's `run(argv)` under `main`."""
    quiet_tensorflow()
    verbose = VERBOSE_FLAG in sys.argv[1:] or os.environ.get("TV_TF_STARTUP_LOGS") == "1"
    command = (importlib.import_module(module) if verbose
               else import_quietly(module, with_tensorflow=not _wants_help(sys.argv[1:])))
    return main(command.run)


