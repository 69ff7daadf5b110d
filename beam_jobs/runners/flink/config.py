"""The local cluster's one definition of ports and sizes, and the Flink `config.yaml` from it.

Why each Flink setting is there:
- everything binds to `localhost` (JobManager RPC, REST, TaskManagers): nothing is reachable
  from other machines;
- one slot per TaskManager and `parallelism.default: 2`: the two TaskManagers each run half of
  every stage, each with its own SDK worker;
- `classloader.resolve-order: parent-first`: Beam's jars sit in the cluster's lib (see
  install.py), and classes loaded there let Beam keep one SDK environment per TaskManager;
- `taskmanager.network.sort-shuffle.min-buffers: 64`: Flink 1.19 reserves 512 network buffers
  for every blocking result by default, and a Beam batch job has hundreds of them;
- an exponential-delay restart strategy: a job whose TaskManager dies is restarted once a slot
  is free again (`make flink-up` starts the missing TaskManager). Not fixed-delay: a lost
  TaskManager fails many tasks of a batch job at once, each counted as one attempt, so three
  fixed-delay attempts were used up within a second; exponential-delay counts failures that
  arrive within one backoff as one;
- `slot.request.timeout`: without a second TaskManager the job fails within a minute with
  Flink's "could not acquire the minimum required resources" instead of waiting five minutes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import yaml


@dataclass(frozen=True)
class ClusterSpec:
    """Ports and sizes of the local session cluster (examples/flink.yaml names the same ports)."""

    rest_port: int = 8081
    rpc_port: int = 6123
    job_port: int = 8099
    artifact_port: int = 8098
    expansion_port: int = 8097
    worker_pool_port: int = 50000
    taskmanagers: int = 2
    slots_per_taskmanager: int = 1
    jobmanager_memory: str = "1024m"
    taskmanager_memory: str = "1536m"
    job_server_heap: str = "512m"
    restart_attempts: int = 6

    @property
    def ports(self) -> dict[str, int]:
        """Every port the cluster listens on, by role (checked free after `flink-down`)."""
        return {"rest": self.rest_port, "jobmanager rpc": self.rpc_port,
                "job server": self.job_port, "artifact service": self.artifact_port,
                "expansion service": self.expansion_port, "worker pool": self.worker_pool_port}


def _shipped_java_opts(flink_home: str) -> str:
    """`env.java.opts.all` of the distribution's own config (the --add-opens Java 17 needs)."""
    with open(os.path.join(flink_home, "conf", "config.yaml")) as f:
        shipped = yaml.safe_load(f)
    return shipped["env"]["java"]["opts"]["all"]


def flink_config(spec: ClusterSpec, flink_home: str, tmp_dir: str) -> dict:
    """The cluster's `config.yaml` as a mapping."""
    return {
        "env": {"java": {"opts": {"all": _shipped_java_opts(flink_home)}}},
        "jobmanager": {"bind-host": "localhost",
                       "rpc": {"address": "localhost", "port": spec.rpc_port},
                       "memory": {"process": {"size": spec.jobmanager_memory}},
                       "execution": {"failover-strategy": "region"}},
        "taskmanager": {"bind-host": "localhost", "host": "localhost",
                        "numberOfTaskSlots": spec.slots_per_taskmanager,
                        "memory": {"process": {"size": spec.taskmanager_memory},
                                   "network": {"min": "128m", "max": "128m"},
                                   "managed": {"fraction": 0.2}},
                        "network": {"sort-shuffle": {"min-buffers": 64}}},
        "parallelism": {"default": spec.taskmanagers * spec.slots_per_taskmanager},
        "rest": {"address": "localhost", "bind-address": "localhost", "port": spec.rest_port},
        "classloader": {"resolve-order": "parent-first"},
        "restart-strategy": {"type": "exponential-delay",
                             "exponential-delay": {
                                 "initial-backoff": "2 s", "max-backoff": "10 s",
                                 "backoff-multiplier": 2.0, "reset-backoff-threshold": "10 min",
                                 "attempts-before-reset-backoff": spec.restart_attempts}},
        "slot": {"request": {"timeout": 60000}},
        "io": {"tmp": {"dirs": tmp_dir}},
    }


def write_conf(spec: ClusterSpec, flink_home: str, conf_dir: str, tmp_dir: str) -> None:
    """FLINK_CONF_DIR: our config.yaml plus the distribution's log4j files."""
    os.makedirs(conf_dir, exist_ok=True)
    os.makedirs(tmp_dir, exist_ok=True)
    shipped = os.path.join(flink_home, "conf")
    for name in os.listdir(shipped):
        if name.startswith(("log4j", "logback")):
            with open(os.path.join(shipped, name)) as src, \
                    open(os.path.join(conf_dir, name), "w") as dst:
                dst.write(src.read())
    with open(os.path.join(conf_dir, "config.yaml"), "w") as f:
        yaml.safe_dump(flink_config(spec, flink_home, tmp_dir), f, sort_keys=False)
