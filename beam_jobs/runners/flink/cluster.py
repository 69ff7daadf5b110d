"""Start and stop the local Flink session cluster: a JobManager, two TaskManagers (each its own
JVM), Beam's Flink job server and Beam's SDK worker pool running this project's venv.

Every process is known by the pid file written when it started (Flink's own scripts keep the
JobManager's and TaskManagers'; we keep the job server's and the worker pool's), and only those
pids are ever signalled, after checking that the pid still runs what we started. `up` starts
whatever is missing (a killed TaskManager included) and returns once both TaskManagers are
registered; `down` stops exactly what `up` started and waits until the ports are closed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

from beam_jobs.cli.errors import UserError
from beam_jobs.runners.flink import rest
from beam_jobs.runners.flink.config import ClusterSpec, write_conf
from beam_jobs.runners.flink.install import Folders, install

# What each role's command line contains, to tell our process from a reused pid.
SIGNATURES = {"jobmanager": "StandaloneSessionClusterEntrypoint",
              "taskmanager": "TaskManagerRunner",
              "jobserver": "FlinkJobServerDriver",
              "worker_pool": "worker_pool_main"}
JOB_SERVER_MAIN = "org.apache.beam.runners.flink.FlinkJobServerDriver"


def default_root() -> str:
    """`.flink/` in the checkout this package comes from (ignored by git), or $TV_FLINK_DIR."""
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    return os.environ.get("TV_FLINK_DIR", os.path.join(package_root, ".flink"))


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _pid_file(folders: Folders, role: str) -> str:
    user = os.environ.get("USER", "")  # flink-daemon.sh names its pid files after $USER
    flink_names = {"jobmanager": f"flink-{user}-standalonesession.pid",
                   "taskmanager": f"flink-{user}-taskexecutor.pid"}
    return os.path.join(folders.pid, flink_names.get(role, f"{role}.pid"))


def running_pids(folders: Folders, role: str) -> list[int]:
    """Pids in the role's pid file that still run that role's program."""
    try:
        with open(_pid_file(folders, role)) as f:
            pids = [int(line) for line in f.read().split() if line.strip().isdigit()]
    except FileNotFoundError:
        return []
    return [pid for pid in pids if SIGNATURES[role] in _cmdline(pid)]


def _prune_pid_file(folders: Folders, role: str) -> None:
    """Forget pids that died (a TaskManager killed with -9 leaves its line behind)."""
    path = _pid_file(folders, role)
    alive = running_pids(folders, role)
    if os.path.exists(path):
        with open(path, "w") as f:
            f.writelines(f"{pid}\n" for pid in alive)


def flink_env(folders: Folders) -> dict[str, str]:
    return dict(os.environ, FLINK_HOME=folders.flink_home, FLINK_CONF_DIR=folders.conf,
                FLINK_LOG_DIR=folders.log, FLINK_PID_DIR=folders.pid, FLINK_LIB_DIR=folders.lib)


def _flink_script(folders: Folders, script: str, *args: str) -> None:
    subprocess.run([os.path.join(folders.flink_home, "bin", script), *args], check=True,
                   env=flink_env(folders), stdout=subprocess.DEVNULL)


def _spawn(folders: Folders, role: str, command: list[str], env: dict[str, str],
           cwd: str) -> None:
    """Start a long-running process of ours, detached, with its log and pid file."""
    with open(os.path.join(folders.log, f"{role}.log"), "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   cwd=cwd, start_new_session=True)
    with open(_pid_file(folders, role), "w") as f:
        f.write(f"{process.pid}\n")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("localhost", port)) == 0


def _wait(condition: Callable[[], bool], seconds: float, problem: str, folders: Folders) -> None:
    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline:
            raise UserError(f"{problem} after {seconds:.0f} s (logs in {folders.log}).")
        time.sleep(0.5)


def _start_job_server(folders: Folders, spec: ClusterSpec) -> None:
    command = ["java", f"-Xmx{spec.job_server_heap}",
               "-Dorg.slf4j.simpleLogger.showDateTime=true",
               "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd HH:mm:ss,SSS", "-cp",
               os.pathsep.join(folders.job_server_classpath()), JOB_SERVER_MAIN,
               f"--flink-master=localhost:{spec.rest_port}", f"--flink-conf-dir={folders.conf}",
               "--job-host=localhost", f"--job-port={spec.job_port}",
               f"--artifact-port={spec.artifact_port}",
               f"--expansion-port={spec.expansion_port}"]
    _spawn(folders, "jobserver", command, dict(os.environ), folders.root)


def _start_worker_pool(folders: Folders, spec: ClusterSpec, repo_root: str) -> None:
    """Beam's worker pool with this interpreter's venv first on PATH: every SDK worker it starts
    runs `python` from the same venv, importing this checkout's packages (cwd = repo root)."""
    venv_bin = os.path.dirname(sys.executable)
    env = dict(os.environ, PATH=venv_bin + os.pathsep + os.environ.get("PATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root, env.get("PYTHONPATH")) if p)
    _spawn(folders, "worker_pool",
           [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
            f"--service_port={spec.worker_pool_port}"], env, repo_root)


def up(folders: Folders, spec: ClusterSpec = ClusterSpec(), repo_root: str | None = None) -> None:
    """Install (cached), then start whatever of the cluster is not running; idempotent."""
    install(folders)
    for folder in (folders.log, folders.pid):
        os.makedirs(folder, exist_ok=True)
    write_conf(spec, folders.flink_home, folders.conf, folders.tmp)
    repo_root = repo_root or os.path.dirname(folders.root)
    if not running_pids(folders, "jobmanager"):
        _flink_script(folders, "jobmanager.sh", "start")
    _prune_pid_file(folders, "taskmanager")
    for _ in range(spec.taskmanagers - len(running_pids(folders, "taskmanager"))):
        _flink_script(folders, "taskmanager.sh", "start")
    if not running_pids(folders, "jobserver"):
        _start_job_server(folders, spec)
    if not running_pids(folders, "worker_pool"):
        _start_worker_pool(folders, spec, repo_root)
    _wait(lambda: rest.taskmanager_count(spec.rest_port) >= spec.taskmanagers, 180,
          f"The Flink cluster did not come up: {spec.taskmanagers} TaskManagers not registered",
          folders)
    _wait(lambda: port_open(spec.job_port) and port_open(spec.worker_pool_port), 120,
          "The Flink cluster did not come up: the job server or the worker pool is not "
          "listening", folders)


def _children(pid: int) -> list[int]:
    """Direct children (the SDK workers a worker pool started)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(child) for child in f.read().split()]
        except OSError:
            continue
    return found


def _stop(pids: list[int], seconds: float = 20) -> None:
    """SIGTERM, then SIGKILL what is still there after `seconds`."""
    for pid in pids:
        with _ignore_gone():
            os.kill(pid, signal.SIGTERM)
    deadline = time.time() + seconds
    while any(_cmdline(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.2)
    for pid in pids:
        if _cmdline(pid):
            with _ignore_gone():
                os.kill(pid, signal.SIGKILL)


class _ignore_gone:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, value, traceback) -> bool:
        return kind is ProcessLookupError


def down(folders: Folders, spec: ClusterSpec = ClusterSpec()) -> None:
    """Stop exactly the processes `up` started (by pid file) and wait for the ports to close."""
    pool = running_pids(folders, "worker_pool")
    sdk_workers = [child for pid in pool for child in _children(pid)]
    for role in ("jobserver", "taskmanager", "jobmanager"):
        _stop(running_pids(folders, role))
    _stop(pool + sdk_workers)
    for role in SIGNATURES:
        path = _pid_file(folders, role)
        if os.path.exists(path):
            os.remove(path)
    _wait(lambda: not any(port_open(port) for port in spec.ports.values()), 30,
          "The Flink cluster's ports are still open", folders)
