"""tv-retrain: extract the new images, train a challenger, promote it only if it is better.

    tv-retrain --source=KIND:URI --workdir=DIR [--margin=0.01] [--backbone=NAME] [Beam flags]

One command for a scheduler (cron, systemd timer, Kubernetes CronJob, Airflow).  Under
`--workdir`:

    retrain.lock                      held for the whole run (see trainer.retrain.lock); a second
                                      overlapping run exits with code 75 (EX_TEMPFAIL)
    transfer_values/<backbone>/runs/  committed runs of one backbone: the full run, then deltas
    models/<model_id>/                one trained model per (runs used, settings); complete or absent
    current -> models/<model_id>      the champion: a symlink swapped atomically with os.replace
    history.jsonl                     one line per retrain: runs, metrics of both, decision, times

Every step is idempotent and nothing the champion serves is touched before the final
`os.replace`, so a crash anywhere leaves the champion serving and a rerun finishes the work:
the delta extraction skips what committed runs hold, a model id already under models/ is
reused instead of retrained, and a half-trained model folder is discarded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any

from beam_jobs import backbones
from beam_jobs.cli.config_file import expand_config
from beam_jobs.cli.errors import UserError
from beam_jobs.cli.flags import argument_parser
from beam_jobs.extract import pipeline as extract
from trainer.retrain import champion, lock
from trainer.train.config import HEADS, TrainConfig
from trainer.train.data.dataset import open_training_data

EX_TEMPFAIL = 75  # sysexits.h: "try again later", what a scheduler should see for an overlap
EXTRACT_DIR = "transfer_values"
MODELS_DIR = "models"
HISTORY = "history.jsonl"
LOCK_FILE = "retrain.lock"
EXAMPLE = """Any other flag (--splits, --limit, --label_names, --runner, ...) goes to tv-extract.
Exit codes: 0 done (promoted or kept: see history.jsonl), 2 a problem to fix, 75 another
retrain holds the lock (nothing was done; try again later).

example: (what examples/scheduling/retrain.cron runs every night)
  tv-retrain --source=folder:/srv/images --workdir=/srv/transfer-values --margin=0.01"""


@dataclasses.dataclass(frozen=True)
class RetrainConfig:
    """Everything one retrain needs; `extract_args` are passed to tv-extract unchanged."""

    source: str
    workdir: str
    backbone: str = "efficientnet_lite0"
    margin: float = 0.01
    runs_root: str = ""  # default: <workdir>/transfer_values; any Beam filesystem (gs://…)
    lock_file: str = ""  # default: <workdir>/retrain.lock; a gs://… path makes it a lease object
    lock_ttl_s: float = lock.DEFAULT_TTL_S
    extract_args: tuple[str, ...] = ()
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    @property
    def lock_path(self) -> str:
        return self.lock_file or os.path.join(self.workdir, LOCK_FILE)


def data_dir(runs_root: str, backbone: backbones.Backbone) -> str:
    """One extract output per backbone fingerprint: a new backbone starts a fresh lineage
    (a full extraction), and no training view ever mixes two backbones."""
    digest = hashlib.sha256(backbone.fingerprint.encode()).hexdigest()[:12]
    return f"{runs_root.rstrip('/')}/{backbone.name}-{digest}"


def extract_delta(cfg: RetrainConfig, output: str) -> dict[str, Any]:
    """tv-extract --incremental, in this process (the lock covers it)."""
    return extract.run([f"--source={cfg.source}", f"--output={output}",
                        f"--backbone={cfg.backbone}", "--incremental", *cfg.extract_args])


def model_id(run_ids: Sequence[str], config: TrainConfig) -> str:
    """Same runs and same settings → same id, so a rerun finds the model already trained."""
    key = json.dumps({"runs": sorted(run_ids), "train": dataclasses.asdict(config)},
                     sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def train_challenger(cfg: RetrainConfig, data: str, run_ids: Sequence[str]) -> tuple[str, bool]:
    """Train into models/.partial-<id>, then rename to models/<id>; returns (dir, reused)."""
    from trainer.train.command import train

    models = os.path.join(cfg.workdir, MODELS_DIR)
    identifier = model_id(run_ids, cfg.train)
    target = os.path.join(models, identifier)
    if os.path.isdir(target):
        return target, True
    staging = os.path.join(models, f".partial-{identifier}")
    shutil.rmtree(staging, ignore_errors=True)  # what a killed earlier attempt left
    os.makedirs(staging)
    train(cfg.train, data, staging)
    champion.write_model_info(staging, identifier, data, cfg.train)
    os.replace(staging, target)
    return target, False


def append_history(workdir: str, entry: dict[str, Any]) -> None:
    """One JSON line, appended and flushed to disk before the command reports success."""
    with open(os.path.join(workdir, HISTORY), "a") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def retrain(cfg: RetrainConfig) -> dict[str, Any]:
    """The six steps under the lock; returns the history line it appended."""
    os.makedirs(cfg.workdir, exist_ok=True)
    with lock.held(cfg.lock_path, cfg.lock_ttl_s) as lease:
        started, durations = time.time(), {}
        mark = time.time()
        runs_root = cfg.runs_root or os.path.join(cfg.workdir, EXTRACT_DIR)
        output = data_dir(runs_root, backbones.load(cfg.backbone))
        delta = extract_delta(cfg, output)
        durations["extract_s"], mark = round(time.time() - mark, 2), time.time()
        lock.renew(lease)
        training_data = open_training_data(output)
        run_ids = [run.run_id for run in training_data.runs]
        challenger_dir, reused = train_challenger(cfg, output, run_ids)
        durations["train_s"], mark = round(time.time() - mark, 2), time.time()
        lock.renew(lease)
        champion_dir = champion.current(cfg.workdir)
        scores = champion.score_both(challenger_dir, champion_dir, training_data, cfg.train)
        decision = champion.decide(scores, cfg.margin)
        durations["evaluate_s"] = round(time.time() - mark, 2)
        if decision["promote"]:
            champion.promote(cfg.workdir, challenger_dir)
        durations["total_s"] = round(time.time() - started, 2)
        entry = {"started": _utc(started), "source": cfg.source, "backbone": cfg.backbone,
                 "delta_run": delta.get("run_id"), "new_images": delta.get("accepted", 0),
                 "runs": run_ids, "challenger_reused": reused, **scores, **decision,
                 "margin": cfg.margin, "durations": durations}
        append_history(cfg.workdir, entry)
    return entry


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def parse_args(argv: Sequence[str] | None) -> RetrainConfig:
    """Our flags; anything else (--splits, --limit, --runner, …) goes to tv-extract."""
    defaults, train_defaults = RetrainConfig("", ""), TrainConfig()
    parser = argument_parser("tv-retrain", __doc__.split("\n")[0], EXAMPLE)
    parser.add_argument("--source", required=True, help="KIND:URI, as for tv-extract")
    parser.add_argument("--workdir", required=True, help="local folder: runs, models, current")
    parser.add_argument("--backbone", default=defaults.backbone)
    parser.add_argument("--margin", type=float, default=defaults.margin,
                        help="promote only if test accuracy improves by at least this much")
    parser.add_argument("--runs_root", default="", help="where the extract runs go (default "
                        "<workdir>/transfer_values; a gs://… folder for remote runners)")
    parser.add_argument("--lock", default="", help="lock path (default <workdir>/retrain.lock;"
                        " gs://… for a lease object shared by several machines)")
    parser.add_argument("--lock_ttl_s", type=float, default=defaults.lock_ttl_s)
    parser.add_argument("--head", choices=HEADS, default=train_defaults.head)
    for name in ("epochs", "batch_size", "patience", "seed"):
        parser.add_argument(f"--{name}", type=int, default=getattr(train_defaults, name))
    parser.add_argument("--learning_rate", type=float, default=train_defaults.learning_rate)
    parser.add_argument("--verbose", action="store_true")
    args, extract_args = parser.parse_known_args(
        expand_config(sys.argv[1:] if argv is None else argv))
    if args.margin < 0:
        raise UserError(f"--margin must not be negative, got {args.margin}.")
    train = TrainConfig(head=args.head, epochs=args.epochs, batch_size=args.batch_size,
                        patience=args.patience, seed=args.seed, learning_rate=args.learning_rate)
    return RetrainConfig(args.source, os.path.abspath(args.workdir), args.backbone, args.margin,
                         args.runs_root, args.lock, args.lock_ttl_s, tuple(extract_args), train)


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The command.  An overlap is not an error to fix: one sentence and exit 75
    (EX_TEMPFAIL), so a scheduler just tries again at its next tick."""
    try:
        entry = retrain(parse_args(argv))
    except lock.LockHeld as held:
        print(f"tv-retrain: {held}", file=sys.stderr)
        raise SystemExit(EX_TEMPFAIL) from None
    print(f"{entry['decision']}: {entry['reason']}")
    return entry
