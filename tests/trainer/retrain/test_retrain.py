"""tv-retrain end to end on tiny data: lock, delta, champion/challenger, crash safety.

A champion workdir is built once per module and copied into each test, because a retrain
(extract + train + serving export) is the slow part.
"""

import gzip
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import REPO_ROOT
from tests.helpers.images import write_idx
from trainer.retrain import champion, lock
from trainer.retrain import command as retrain

ROOT = REPO_ROOT
EXAMPLES = os.path.join(ROOT, "examples", "scheduling")
FAST = ("--epochs=12", "--batch_size=16", "--learning_rate=0.05", "--patience=12",
        "--num_shards=1")


def _flags(backbone: str) -> list[str]:
    return [f"--backbone={backbone}", *FAST]


def _write_labels(directory: str, labels: np.ndarray) -> None:
    header = bytes([0, 0, 8, 1]) + len(labels).to_bytes(4, "big")
    with open(os.path.join(directory, "train-labels-idx1-ubyte.gz"), "wb") as f:
        f.write(gzip.compress(header + labels.astype(np.uint8).tobytes()))


def _add_train_images(source: str, total: int, mislabel_from: int | None = None) -> None:
    """Grow the idx train part to `total` images (the first ones unchanged); images from
    `mislabel_from` on get the next class's label: a systematically wrong challenger."""
    write_idx(source, {"train": total, "t10k": 30})
    labels = np.arange(total) % 3
    if mislabel_from is not None:
        labels[mislabel_from:] = (labels[mislabel_from:] + 1) % 3
    _write_labels(source, labels)


def _history(workdir) -> list[dict]:
    with open(os.path.join(workdir, retrain.HISTORY)) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def champion_workdir(tmp_path_factory, tiny_backbone):
    """(source, workdir) after one retrain: 60 train + 30 test images, champion promoted."""
    base = tmp_path_factory.mktemp("champion")
    source = write_idx(str(base / "idx"), {"train": 60, "t10k": 30})
    workdir = str(base / "work")
    entry = retrain.run([f"--source=idx:{source}", f"--workdir={workdir}",
                         *_flags(tiny_backbone)])
    assert entry["decision"] == "promoted" and entry["reason"] == "no champion yet"
    return source, workdir


@pytest.fixture
def workdir_copy(champion_workdir, tmp_path):
    source, workdir = champion_workdir
    shutil.copytree(source, tmp_path / "idx")
    shutil.copytree(workdir, tmp_path / "work", symlinks=True)
    return str(tmp_path / "idx"), str(tmp_path / "work")


@pytest.mark.slow
def test_first_retrain_promotes_and_writes_one_history_line(champion_workdir):
    _, workdir = champion_workdir
    [entry] = _history(workdir)
    assert entry["new_images"] == 90 and entry["champion"] is None
    assert champion.current(workdir) == os.path.join(workdir, "models",
                                                     entry["challenger"]["model_id"])
    assert entry["challenger"]["test_rows"] == 30
    assert entry["challenger"]["test_accuracy"] > 0.6  # the tiny head learns the bands


@pytest.mark.slow
def test_mislabelled_challenger_is_not_promoted(workdir_copy, tiny_backbone):
    source, workdir = workdir_copy
    before = champion.current(workdir)
    _add_train_images(source, 240, mislabel_from=60)
    entry = retrain.run([f"--source=idx:{source}", f"--workdir={workdir}",
                         *_flags(tiny_backbone)])
    assert entry["new_images"] == 180 and len(entry["runs"]) == 2
    assert entry["challenger"]["test_rows"] == entry["champion"]["test_rows"] == 30
    assert entry["challenger"]["test_accuracy"] < entry["champion"]["test_accuracy"]
    assert entry["decision"] == "kept" and "below the margin" in entry["reason"]
    assert champion.current(workdir) == before
    assert _history(workdir)[-1] == json.loads(json.dumps(entry, sort_keys=True))


@pytest.mark.slow
def test_sigkill_during_retrain_leaves_champion_serving_and_rerun_finishes(
        workdir_copy, tiny_backbone):
    source, workdir = workdir_copy
    champion_dir = champion.current(workdir)
    _add_train_images(source, 90)
    argv = [f"--source=idx:{source}", f"--workdir={workdir}", *_flags(tiny_backbone)]
    child = subprocess.Popen([sys.executable, "-m", "trainer.retrain", *argv], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    models = os.path.join(workdir, retrain.MODELS_DIR)
    deadline = time.time() + 240
    while not any(name.startswith(".partial-") for name in os.listdir(models)):
        assert child.poll() is None and time.time() < deadline, "retrain never began training"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert champion.current(workdir) == champion_dir
    assert os.path.exists(os.path.join(champion_dir, "serving", "saved_model.pb"))
    assert os.path.exists(os.path.join(workdir, retrain.LOCK_FILE))  # left behind by kill -9
    entry = retrain.run(argv)  # takes over the dead holder's lock
    assert entry["new_images"] == 0  # the killed run had committed the delta already
    assert len(entry["runs"]) == 2 and len(_history(workdir)) == 2
    assert not [n for n in os.listdir(models) if n.startswith(".partial-")]
    assert champion.current(workdir) == os.path.join(
        models, entry["challenger" if entry["promote"] else "champion"]["model_id"])
    assert not os.path.exists(os.path.join(workdir, retrain.LOCK_FILE))


def _cron_command() -> str:
    """The command line of examples/scheduling/retrain.cron, verbatim."""
    with open(os.path.join(EXAMPLES, "retrain.cron")) as f:
        [line] = [text for text in f if re.match(r"^[0-9*]", text)]
    return line.split(None, 5)[5].strip()


def test_cron_and_systemd_examples_run_the_same_command():
    with open(os.path.join(EXAMPLES, "tv-retrain.service")) as f:
        [exec_start] = [text for text in f if text.startswith("ExecStart=")]
    command = _cron_command().split(" >>")[0]
    assert exec_start.strip().endswith("/" + command)


def _run_cron_command(source: str, workdir: str, backbone: str) -> subprocess.Popen:
    env = dict(os.environ, TV_SOURCE=f"idx:{source}", TV_WORKDIR=workdir,
               TV_RETRAIN_FLAGS=" ".join(["--margin=0.01", *_flags(backbone)]))
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    command = _cron_command()
    if shutil.which("tv-retrain", path=env["PATH"]) is None:  # not yet `pip install -e .`-ed
        command = command.replace("tv-retrain", f"{shlex.quote(sys.executable)} -m trainer.retrain", 1)
    return subprocess.Popen(["sh", "-c", command], cwd=ROOT, env=env)


@pytest.mark.slow
def test_overlapping_cron_runs_one_refuses_with_exit_75(workdir_copy, tiny_backbone):
    source, workdir = workdir_copy
    _add_train_images(source, 75)
    first = _run_cron_command(source, workdir, tiny_backbone)
    lock_path = os.path.join(workdir, retrain.LOCK_FILE)
    deadline = time.time() + 120
    while not os.path.exists(lock_path):
        assert first.poll() is None and time.time() < deadline
        time.sleep(0.05)
    second = _run_cron_command(source, workdir, tiny_backbone)
    assert second.wait(timeout=240) == retrain.EX_TEMPFAIL
    assert first.wait(timeout=400) == 0
    with open(os.path.join(workdir, "retrain.log")) as f:
        log = f.read()
    assert "another retrain holds the lock" in log
    assert len(_history(workdir)) == 2  # the champion's line and the first run's; not the second's
    # the same run again (in this process: the cron line's start-up was tested above): a no-op
    again = retrain.run([f"--source=idx:{source}", f"--workdir={workdir}", "--margin=0.01",
                         *_flags(tiny_backbone)])
    assert _history(workdir)[-1] == json.loads(json.dumps(again, sort_keys=True))
    assert len(_history(workdir)) == 3
    assert again["new_images"] == 0 and again["challenger_reused"] and again["decision"] == "kept"


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_or_expired_one(tmp_path):
    path = str(tmp_path / "retrain.lock")
    lease = lock.acquire(path, ttl_s=60)
    with pytest.raises(lock.LockHeld, match="another retrain holds the lock"):
        lock.acquire(path)
    lock.release(lease)
    assert not os.path.exists(path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with open(path, "w") as f:
        json.dump({"pid": int(dead), "host": socket.gethostname(), "token": "x",
                   "expires": time.time() + 3600}, f)
    lock.release(lock.acquire(path))  # a holder whose pid is gone: taken over
    with open(path, "w") as f:
        json.dump({"pid": os.getpid(), "host": "elsewhere", "token": "y",
                   "expires": time.time() - 1}, f)
    lock.release(lock.acquire(path))  # an expired lease from another host: taken over
