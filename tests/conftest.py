"""Shared fixtures; also guards the interpreter-exit crash that tensorflow-transform causes."""

from __future__ import annotations

import atexit
import gc
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
atexit.register(gc.freeze)  # see beam_jobs.cli.guard_exit_segfault


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> str:
    from tests.tiny_backbone import make_tiny_backbone

    return make_tiny_backbone(str(tmp_path_factory.mktemp("backbone") / "tiny"))


# The live PyTorch parity tests need torch (a multi-GB CUDA build from PyPI): only `make parity`
# (TV_PARITY=1) collects them; `make test` checks the port against committed reference outputs.
collect_ignore = [] if os.environ.get("TV_PARITY") == "1" else ["parity"]
