"""Shared fixtures: a tiny backbone, one training through tv-train (`trained`), one export with
decisive weights (`exported`); the `slow` marker; and the guard against the interpreter-exit crash
that tensorflow-transform causes."""

from __future__ import annotations

import atexit
import contextlib
import gc
import io
import os
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
atexit.register(gc.freeze)  # see beam_jobs.cli.launch.guard_exit_segfault


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> str:
    from tests.helpers.tiny_backbone import make_tiny_backbone

    return make_tiny_backbone(str(tmp_path_factory.mktemp("backbone") / "tiny"))


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "slow: one of the slowest tests (tens of seconds on two cores); "
                   "`make test-fast` skips them, `make test` runs them")
    config.addinivalue_line(
        "markers", "xdist_group(name): tests pytest-xdist keeps on one worker (`make test`)")


def pytest_collection_modifyitems(config, items) -> None:
    """One xdist group per file, so module fixtures are built once (`make test` runs
    `-n auto --dist loadgroup`); every Flink test in one group: they share one cluster, on
    fixed ports, that a second worker must not start again."""
    for item in items:
        path = item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(
            "flink" if "/runners/flink/" in path else path))


TRAIN_FLAGS = ["--head", "softmax", "--label_smoothing", "0", "--epochs", "10", "--patience",
               "4", "--batch_size", "32", "--learning_rate", "0.05", "--seed", "5"]


@pytest.fixture(scope="session")
def trained(tiny_backbone, tmp_path_factory) -> tuple[str, str]:
    """`tv-train` through its CLI entry, on a run whose backbone is a real SavedModel;
    returns (data, model_dir)."""
    from beam_jobs.cli.launch import main
    from tests.helpers import fake_runs as fx
    from trainer.train import command as train

    data = fx.write_servable_run(str(tmp_path_factory.mktemp("extract")), tiny_backbone)
    model_dir = str(tmp_path_factory.mktemp("model"))
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(train.run, ["--data", data, "--model_dir", model_dir, *TRAIN_FLAGS])
    assert code == 0
    assert "test accuracy:" in stdout.getvalue() and model_dir in stdout.getvalue()
    return data, model_dir


@pytest.fixture(scope="session")
def exported(tiny_backbone, tmp_path_factory) -> tuple[Any, Any, str]:
    """(head, backbone, model_dir): a softmax head with fixed, decisive weights over the tiny
    backbone, exported as tv-train exports it (training itself: the `trained` fixture)."""

    from beam_jobs import backbones
    from tests.helpers import fake_runs as fx
    from trainer.serve import export
    from trainer.serve.export import SERVING_DIR, export_serving

    backbone = backbones.load(tiny_backbone)
    head = fx.random_softmax_head(backbone.feature_dim, scale=3.0)
    model_dir = str(tmp_path_factory.mktemp("model"))
    with pytest.MonkeyPatch.context() as patch:  # the fresh-process check: tests/trainer/serve
        patch.setattr(export, "verify_in_fresh_process", lambda *args: None)
        export_serving(head, backbone, sorted(fx.CLASSES), os.path.join(model_dir, SERVING_DIR))
    return head, backbone, model_dir


# The live PyTorch parity tests need torch (a multi-GB CUDA build from PyPI): only `make parity`
# (TV_PARITY=1) collects them; `make test` checks the port against committed reference outputs.
collect_ignore = [] if os.environ.get("TV_PARITY") == "1" else ["parity"]
