"""Install what a local Flink session cluster needs into an ignored project folder, once.

- Flink itself: PyPI's `apache-flink` + `apache-flink-libraries` carry a whole Flink
  distribution (`pyflink/lib/flink-dist-*.jar`, `pyflink/bin/*.sh`). `apache-flink` pins an old
  apache-beam, so both go into their own folder with `pip install --no-deps --target`, never
  into the project's virtual environment.
- Beam's Flink job server: a Maven classpath resolved from `pom.xml` beside this module (no
  shaded job-server jar is served for our versions; see that file).
- The cluster's `lib/`: Flink's own jars plus the job server's Beam jars, so Beam's classes load
  from Flink's parent class loader. Only then does Beam keep one SDK environment per
  TaskManager for the whole job instead of starting a fresh SDK worker for every task.

Each step leaves a marker and is skipped when its marker is there (`make flink-up` twice is
quick).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

from beam_jobs.cli.errors import UserError

FLINK_VERSION = "1.19.3"
BEAM_JOB_SERVER_VERSION = "2.62.0"  # keep in step with pom.xml
POM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pom.xml")
# Flink's own logging jars stay Flink's; the job server's slf4j would shadow them.
_NOT_FOR_CLUSTER_LIB = ("flink-", "slf4j-", "log4j-")


@dataclass(frozen=True)
class Folders:
    """Every path the cluster uses, under one ignored root (`.flink/` in the checkout)."""

    root: str

    @property
    def dist(self) -> str:
        return os.path.join(self.root, "dist")

    @property
    def flink_home(self) -> str:
        return os.path.join(self.dist, "pyflink")

    @property
    def lib(self) -> str:
        return os.path.join(self.root, "lib")

    @property
    def conf(self) -> str:
        return os.path.join(self.root, "conf")

    @property
    def log(self) -> str:
        return os.path.join(self.root, "log")

    @property
    def pid(self) -> str:
        return os.path.join(self.root, "pid")

    @property
    def tmp(self) -> str:
        return os.path.join(self.root, "tmp")

    @property
    def classpath_file(self) -> str:
        return os.path.join(self.root, "job-server.classpath")

    def job_server_classpath(self) -> list[str]:
        with open(self.classpath_file) as f:
            return [path for path in f.read().strip().split(os.pathsep) if path]


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stdout.splitlines()[-15:])
        raise UserError(f"Installing {what} failed ({' '.join(command[:4])} …):\n{tail}")


def install_flink(folders: Folders) -> None:
    """Flink's distribution from PyPI into `<root>/dist` (about 260 MB, cached by pip)."""
    marker = os.path.join(folders.dist, f".installed-{FLINK_VERSION}")
    if os.path.exists(marker):
        return
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
          "--target", folders.dist,
          f"apache-flink=={FLINK_VERSION}", f"apache-flink-libraries=={FLINK_VERSION}"],
         f"Flink {FLINK_VERSION} from PyPI")
    bin_dir = os.path.join(folders.flink_home, "bin")
    for name in os.listdir(bin_dir):  # wheels do not keep the executable bit
        path = os.path.join(bin_dir, name)
        os.chmod(path, os.stat(path).st_mode | 0o111)
    open(marker, "w").close()


def install_job_server(folders: Folders) -> None:
    """Resolve the job server's classpath with Maven (jars stay in Maven's local repository)."""
    if os.path.exists(folders.classpath_file):
        return
    os.makedirs(folders.root, exist_ok=True)
    partial = folders.classpath_file + ".partial"
    _run(["mvn", "-q", "-B", "-f", POM, "dependency:build-classpath",
          f"-Dmdep.outputFile={partial}"],
         f"Beam's Flink job server {BEAM_JOB_SERVER_VERSION} from Maven Central")
    os.replace(partial, folders.classpath_file)


def link_cluster_lib(folders: Folders) -> None:
    """`<root>/lib` = Flink's lib + the Beam jars (FLINK_LIB_DIR points here)."""
    os.makedirs(folders.lib, exist_ok=True)
    wanted = [os.path.join(folders.flink_home, "lib", name)
              for name in sorted(os.listdir(os.path.join(folders.flink_home, "lib")))]
    wanted += [path for path in folders.job_server_classpath()
               if not os.path.basename(path).startswith(_NOT_FOR_CLUSTER_LIB)]
    for path in wanted:
        link = os.path.join(folders.lib, os.path.basename(path))
        if not os.path.lexists(link):
            os.symlink(path, link)


def install(folders: Folders) -> None:
    """Everything `make flink-up` needs; quick when already there."""
    install_flink(folders)
    install_job_server(folders)
    link_cluster_lib(folders)
