"""The Flink cluster the tests run on: reused when one is already up (`make flink-up`), else
started here and stopped after the last test of the session."""

from __future__ import annotations

import os

import pytest

from tests.helpers import REPO_ROOT

FLINK_CONFIG = os.path.join(REPO_ROOT, "examples", "flink.yaml")
# Several Flink jobs each (a minute or more apiece on two shared cores): run by `make test-flink`
# only, so that `make test` stays within its time budget.
LONG = pytest.mark.skipif(os.environ.get("TV_FLINK_LONG") != "1",
                          reason="several Flink jobs; `make test-flink` runs it")


@pytest.fixture(scope="session")
def flink_cluster():
    from beam_jobs.runners.flink import cluster, rest
    from beam_jobs.runners.flink.config import ClusterSpec
    from beam_jobs.runners.flink.install import Folders

    folders, spec = Folders(os.path.join(REPO_ROOT, ".flink")), ClusterSpec()
    already_up = (rest.taskmanager_count(spec.rest_port) >= spec.taskmanagers
                  and cluster.port_open(spec.job_port)
                  and cluster.port_open(spec.worker_pool_port))
    if not already_up:
        cluster.up(folders, spec, repo_root=REPO_ROOT)
    yield folders, spec
    if not already_up:
        cluster.down(folders, spec)
