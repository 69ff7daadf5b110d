"""`python -m beam_jobs.runners.flink up|down|status` (what `make flink-up` / `flink-down` run).

    up      install Flink and Beam's job server into .flink/ (once), start the cluster
    down    stop exactly what `up` started
    status  the cluster's processes, ports and jobs
"""

from __future__ import annotations

import argparse
import sys

from beam_jobs.cli.errors import UserError
from beam_jobs.runners.flink import cluster, rest
from beam_jobs.runners.flink.config import ClusterSpec
from beam_jobs.runners.flink.install import Folders


def _status(folders: Folders, spec: ClusterSpec) -> None:
    for role in cluster.SIGNATURES:
        print(f"{role:12s} pids {cluster.running_pids(folders, role) or '-'}")
    for role, port in spec.ports.items():
        print(f"{role:18s} localhost:{port} {'open' if cluster.port_open(port) else 'closed'}")
    if cluster.port_open(spec.rest_port):
        print(f"TaskManagers registered: {rest.taskmanager_count(spec.rest_port)}")
        for job in rest.jobs(spec.rest_port)[:5]:
            print(f"job {job['jid']} {job['state']} {job['duration'] / 1000:.1f} s {job['name']}")
    print(f"logs: {folders.log}")


def run(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m beam_jobs.runners.flink",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--dir", default=cluster.default_root(),
                        help="where Flink is installed and the cluster keeps conf, logs, pids")
    args = parser.parse_args(argv)
    folders, spec = Folders(args.dir), ClusterSpec()
    if args.action == "up":
        cluster.up(folders, spec)
        print(f"Flink up: JobManager REST http://localhost:{spec.rest_port}, "
              f"{spec.taskmanagers} TaskManagers, job server localhost:{spec.job_port}, "
              f"SDK worker pool localhost:{spec.worker_pool_port}; logs in {folders.log}")
    elif args.action == "down":
        cluster.down(folders, spec)
        print("Flink down: every process stopped, every port closed.")
    else:
        _status(folders, spec)


def console() -> int:
    """Exit 2 with one sentence for what the user can fix (no TensorFlow import needed here)."""
    try:
        run()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(console())
