"""The extract job on the local Flink cluster against the DirectRunner in process, same machine.

    nice -n 10 python benchmarks/flink_throughput.py --fashion=2000,8000 --photos=150,600

For each collection (Fashion-MNIST from IDX; photo-sized JPEGs 640 to 2048 px made from
scikit-image's photographs) and each runner, `python -m beam_jobs.extract` runs at two sizes
N1 < N2; the marginal rate (N2 - N1) / (t2 - t1) removes the fixed cost per job, which is
t1 - N1 / marginal. Runners: `direct` (in process, the default), `flink-2tm` (two TaskManagers
with one slot each, `--config=examples/flink.yaml`) and `flink-1tm` (one TaskManager with two
slots: the same parallelism and cores in one JVM); a `+single` suffix turns examples/flink.yaml's
`--redistribute` off (each source's images then reach one worker). The Flink cluster is (re)started for each
shape and stopped at the end. Peak resident memory of the JobManager, each TaskManager, the job
server and each SDK worker is sampled every 0.5 s; where Flink's time goes comes from its REST
API (the slowest vertices of the N2 job). Ratio printed: Flink marginal / DirectRunner marginal
(target >= 0.8).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "benchmarks")]

from beam_jobs.runners.flink import cluster, rest  # noqa: E402
from beam_jobs.runners.flink.config import ClusterSpec  # noqa: E402
from beam_jobs.runners.flink.install import Folders  # noqa: E402

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
LABELS = os.path.join(ROOT, "examples", "fashion_mnist_labels.txt")
FLINK_CONFIG = os.path.join(ROOT, "examples", "flink.yaml")
SHAPES = {"flink-2tm": ClusterSpec(taskmanagers=2, slots_per_taskmanager=1),
          "flink-1tm": ClusterSpec(taskmanagers=1, slots_per_taskmanager=2)}
PHOTO_SIZES = ((640, 480), (1024, 768), (2048, 1536), (1280, 960))


def make_photos(root: str, count: int) -> str:
    """`count` JPEGs (quality 90) of 640 to 2048 px in one folder per source photograph."""
    import numpy as np
    from photos_throughput import PHOTOS, encode, photo, source_photo

    bases = {name: source_photo(name) for name in PHOTOS}
    for index in range(count):
        name = PHOTOS[index % len(PHOTOS)]
        path = os.path.join(root, name, f"{index:05d}.jpg")
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            width, height = PHOTO_SIZES[index % len(PHOTO_SIZES)]
            pixels = photo(np.random.default_rng((1, index)), bases[name], width, height)
            with open(path, "wb") as f:
                f.write(encode(pixels, "JPEG"))
    return root


def photo_subset(corpus: str, n: int, root: str) -> str:
    shutil.rmtree(root, ignore_errors=True)
    paths = sorted(glob.glob(os.path.join(corpus, "*", "*.jpg")))[:n]
    for path in paths:
        target = os.path.join(root, os.path.basename(os.path.dirname(path)))
        os.makedirs(target, exist_ok=True)
        os.link(path, os.path.join(target, os.path.basename(path)))
    return root


class PeakMemory:
    """Peak RSS (MiB) per cluster process while a job runs, sampled from /proc."""

    def __init__(self, folders: Folders):
        self.folders, self.peaks, self._stop = folders, {}, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _roles(self) -> dict[str, int]:
        found = {}
        for role in ("jobmanager", "taskmanager", "jobserver", "worker_pool"):
            for i, pid in enumerate(cluster.running_pids(self.folders, role)):
                found[f"{role}-{i}"] = pid
                if role == "worker_pool":
                    for child in cluster._children(pid):
                        found[f"sdk_worker-{child}"] = child
        return found

    def _sample(self) -> None:
        while not self._stop.is_set():
            for role, pid in self._roles().items():
                try:
                    with open(f"/proc/{pid}/status") as f:
                        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
                except (OSError, StopIteration):
                    continue
                self.peaks[role] = max(self.peaks.get(role, 0), rss // 1024)
            time.sleep(0.5)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def extract(source_flags: list[str], runner_flags: list[str], backbone: str) -> dict:
    """One `python -m beam_jobs.extract`; wall seconds and the manifest."""
    out = tempfile.mkdtemp(prefix="tv-flink-bench-")
    command = [sys.executable, "-m", "beam_jobs.extract", *runner_flags, *source_flags,
               f"--output={out}", f"--backbone={backbone}", "--no_progress"]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    wall = time.perf_counter() - start
    [path] = glob.glob(os.path.join(out, "runs", "*", "manifest.json"))
    with open(path) as f:
        manifest = json.load(f)
    shutil.rmtree(out, ignore_errors=True)
    return {"wall": wall, "accepted": manifest["accepted"], "inputs": manifest["inputs"]}


def config_file(single: bool) -> str:
    """examples/flink.yaml, or a copy of it without `redistribute` (`+single` runners)."""
    if not single:
        return FLINK_CONFIG
    import yaml

    with open(FLINK_CONFIG) as f:
        options = yaml.safe_load(f)
    options.pop("redistribute", None)
    path = os.path.join(tempfile.mkdtemp(prefix="tv-flink-bench-"), "flink-single.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(options, f)
    return path


def slowest_vertices(port: int, jid: str, top: int = 5) -> list[tuple[str, float]]:
    vertices = rest.get(port, f"/jobs/{jid}")["vertices"]
    ranked = sorted(vertices, key=lambda v: v["duration"], reverse=True)[:top]
    return [(v["name"][:90], v["duration"] / 1000) for v in ranked]


def measure(name: str, sources: dict[int, list[str]], runner: str, args, folders) -> dict:
    shape, _, variant = runner.partition("+")
    flags = [] if shape == "direct" else [f"--config={config_file(variant == 'single')}"]
    timings, memory, vertices = {}, {}, []
    for n, source_flags in sources.items():
        started_ms = time.time() * 1000
        with PeakMemory(folders) as peaks:
            timings[n] = extract(source_flags, flags, args.backbone)
        memory = peaks.peaks
        if shape != "direct":
            [job, *_] = [j for j in rest.jobs(8081) if j["start-time"] >= started_ms]
            vertices = slowest_vertices(8081, job["jid"])
            timings[n]["flink_job_s"] = job["duration"] / 1000
    (n1, t1), (n2, t2) = [(n, t["wall"]) for n, t in sorted(timings.items())]
    marginal = (n2 - n1) / (t2 - t1)
    result = {"collection": name, "runner": runner, "timings": timings, "marginal": marginal,
              "fixed_s": t1 - n1 / marginal, "wall_rate": n2 / t2, "peak_rss_mib": memory,
              "slowest_vertices": vertices}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fashion", default="2000,8000", help="N1,N2 Fashion-MNIST images")
    parser.add_argument("--photos", default="150,600", help="N1,N2 photos (empty: skip)")
    parser.add_argument("--runners", default="direct,flink-2tm,flink-1tm")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    args = parser.parse_args()
    folders = Folders(cluster.default_root())
    work = tempfile.mkdtemp(prefix="tv-flink-bench-data-")
    collections = {"fashion-mnist": {
        n: [f"--source=idx:{FASHION_MNIST}", f"--limit=train={n},test=0",
            f"--label_names={LABELS}"] for n in map(int, args.fashion.split(","))}}
    if args.photos:
        sizes = list(map(int, args.photos.split(",")))
        corpus = make_photos(os.path.join(work, "corpus"), max(sizes))
        collections["photos"] = {n: [f"--source=folder:{photo_subset(corpus, n, os.path.join(work, str(n)))}"]
                                 for n in sizes}
    results = []
    try:
        for runner in args.runners.split(","):
            shape = runner.partition("+")[0]
            if shape not in SHAPES or not cluster.running_pids(folders, "jobmanager") or \
                    len(cluster.running_pids(folders, "taskmanager")) != SHAPES[shape].taskmanagers:
                cluster.down(folders, ClusterSpec())  # the DirectRunner runs with no cluster up
            if shape in SHAPES:
                cluster.up(folders, SHAPES[shape], repo_root=ROOT)
            for name, sources in collections.items():
                results.append(measure(name, sources, runner, args, folders))
    finally:
        cluster.down(folders, ClusterSpec())
        shutil.rmtree(work, ignore_errors=True)
    direct = {r["collection"]: r["marginal"] for r in results if r["runner"] == "direct"}
    print("\ncollection      runner     marginal img/s  fixed s  wall img/s  vs direct")
    for r in results:
        ratio = r["marginal"] / direct[r["collection"]] if r["collection"] in direct else 0
        print(f"{r['collection']:15s} {r['runner']:10s} {r['marginal']:14.1f} {r['fixed_s']:8.1f}"
              f" {r['wall_rate']:11.1f} {ratio:9.2f}")


if __name__ == "__main__":
    main()
