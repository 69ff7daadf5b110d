"""`tv-train --tune=N`: a KerasTuner search over the head, on transfer values read once.

Every trial trains on the same in-memory copy of the splits (`trainer.train.data.split_cache.SplitCache`), so N
trials cost N fits, not N reads of the shards.  Trial 0 is the search space's defaults, which are
`tv-train`'s own (trainer.train.config: the head measured best across datasets), so a short search
never ends below plain `tv-train` on validation; the next trials are random draws, then Bayesian optimisation
proposes the rest.  Every trial starts from the same random seed, so training the winner once
more through the ordinary path (checkpoint, logs, evaluation, report, serving export) gives back
the trial's model; `tuning.csv` and a report section record every trial.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import tempfile
import time
from typing import Any, Optional, Sequence

import keras
import keras_tuner as kt

from trainer.report import page as report
from trainer.report import plots
from trainer.train import training_report
from trainer.train.config import TrainConfig
from trainer.train.data.dataset import VALIDATION, TrainingData
from trainer.train.data.split_cache import SplitCache
from trainer.train.fit import MONITOR, compiled_head

TUNING_CSV = "tuning.csv"
TUNING_PNG = "tuning.png"
OBJECTIVE = kt.Objective("val_accuracy", direction="max")
TRIAL_MAX_EPOCHS = 40  # a cap on --epochs per trial; with patience 5 most trials stop near 20
INITIAL_POINTS = 5  # trials (the defaults included) before the Gaussian process proposes
# What the search sets; every other TrainConfig field keeps its flag's value.
DEFAULTS = TrainConfig()  # trial 0: plain tv-train's head
SEARCHED = ("hidden_layers", "hidden_units", "dropout", "l2", "learning_rate",
            "label_smoothing", "batch_size")


def trial_config(base: TrainConfig, hp: kt.HyperParameters) -> TrainConfig:
    """The search space and one point of it as a TrainConfig (registers the hyperparameters on
    first use; later calls read the same values back).  Zero hidden layers is the softmax head,
    for which width and dropout are inactive."""
    layers = hp.Int("hidden_layers", 0, 2,
                    default=DEFAULTS.hidden_layers if DEFAULTS.head == "hidden" else 0)
    with hp.conditional_scope("hidden_layers", [1, 2]):
        units = hp.Choice("hidden_units", [256, 512, 1024, 2048], default=DEFAULTS.hidden_units)
        dropout = hp.Choice("dropout", [0.0, 0.2, 0.3, 0.4, 0.5, 0.6], default=DEFAULTS.dropout)
    searched: dict[str, Any] = {
        "l2": hp.Choice("l2", [0.0, 1e-6, 1e-5, 1e-4, 1e-3], default=DEFAULTS.l2),
        "learning_rate": hp.Float("learning_rate", 1e-4, 3e-3, sampling="log",
                                  default=DEFAULTS.learning_rate),
        "label_smoothing": hp.Choice("label_smoothing", [0.0, 0.05, 0.1, 0.2],
                                     default=DEFAULTS.label_smoothing),
        "batch_size": hp.Choice("batch_size", [64, 128, 256, 512], default=DEFAULTS.batch_size),
        "epochs": min(base.epochs, TRIAL_MAX_EPOCHS)}
    if layers:
        searched.update(head="hidden", hidden_layers=layers, hidden_units=units, dropout=dropout)
    else:
        searched.update(head="softmax")
    return dataclasses.replace(base, **searched)


class HeadSearch(kt.HyperModel):
    """Builds a trial's head from its TrainConfig and fits it on the cached splits, with the
    trial's batch size (a fit-time hyperparameter, hence the own `fit`)."""

    def __init__(self, base: TrainConfig, training_data: TrainingData, cache: SplitCache):
        super().__init__(name="head_search")
        self.base, self.training_data, self.cache = base, training_data, cache

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        config = trial_config(self.base, hp)
        if config.seed is not None:  # every trial (and the final refit) starts alike
            keras.utils.set_random_seed(config.seed)
        # Merged per batch like the refit's, so the Normalization layer is the same to the bit.
        moments = ((None, None) if self.cache.transform is not None
                   else self.cache.feature_moments(config))
        return compiled_head(config, self.training_data, moments)

    def fit(self, hp: kt.HyperParameters, model: keras.Model, *args, **kwargs):
        config = trial_config(self.base, hp)
        stop = keras.callbacks.EarlyStopping(monitor=MONITOR, mode="max",
                                             patience=config.patience, restore_best_weights=True)
        balanced = config.class_weights == "balanced"
        return model.fit(self.cache.training(config),
                         validation_data=self.cache.evaluation(VALIDATION, config),
                         epochs=config.epochs, callbacks=[*kwargs.get("callbacks", []), stop],
                         class_weight=self.training_data.class_weights() if balanced else None,
                         shuffle=False, verbose=kwargs.get("verbose", 0))


class DefaultsFirstOracle(kt.oracles.BayesianOptimizationOracle):
    """Bayesian optimisation whose first trial is the space's defaults (the known good head)."""

    def populate_space(self, trial_id: str) -> dict:
        if self.trials:
            return super().populate_space(trial_id)
        defaults = kt.HyperParameters()
        for hp in self.hyperparameters.space:
            defaults.merge([hp])
            if defaults.is_active(hp):  # like the oracle's random draws: active values only
                defaults.values[hp.name] = hp.default
        return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": defaults.values}


class TimedTuner(kt.Tuner):
    """KerasTuner's Tuner, also noting each trial's epochs and seconds for tuning.csv, and
    rewriting tuning.csv after every trial: a long search stopped early keeps what it learnt,
    and one line per trial says how far it is."""

    def __init__(self, *args, csv_path: Optional[str] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.cost: dict[str, tuple[int, float]] = {}
        self.csv_path = csv_path

    def run_trial(self, trial, *args, **kwargs):
        start = time.perf_counter()
        histories = super().run_trial(trial, *args, **kwargs)
        self.cost[trial.trial_id] = (len(histories[0].epoch), time.perf_counter() - start)
        return histories

    def on_trial_end(self, trial) -> None:
        super().on_trial_end(trial)
        rows = self.rows()
        if self.csv_path and rows:
            _write_csv(rows, self.csv_path)
        done = sum(row["val_accuracy"] != "" for row in rows)
        best = next((row for row in rows if row["chosen"]), None)  # the oracle's pick
        seconds = self.cost.get(trial.trial_id, (0, 0.0))[1]
        print(f"head search: trial {trial.trial_id} done ({done}/{self.oracle.max_trials}) in "
              f"{seconds / 60:.1f} min"
              + (f"; best so far trial {best['trial']}, validation accuracy "
                 f"{best['val_accuracy']:.4f}" if best else ""), flush=True)

    def rows(self) -> tuple[dict, ...]:
        """One tuning.csv row per trial so far, the best finished one marked chosen."""
        trials = list(self.oracle.trials.values())
        finished = [t for t in trials if t.score is not None]
        best = self.oracle.get_best_trials(1)[0] if finished else None
        return tuple(_row(t, self.cost.get(t.trial_id), t is best) for t in trials)


@dataclasses.dataclass(frozen=True)
class Tuning:
    """What the search found: the winner's config and one tuning.csv row per trial."""

    config: TrainConfig
    best_trial: str
    rows: tuple[dict, ...]


def search(base: TrainConfig, training_data: TrainingData, cache: SplitCache, model_dir: str,
           trials: int, verbose: int = 0) -> Tuning:
    """Run `trials` trials, write tuning.csv and tuning.png, return the best trial's config.

    The tuner's own folder (trial checkpoints) lives in a temporary directory removed at the end:
    the winner is trained again by the caller, so nothing in it is needed afterwards.
    """
    hypermodel = HeadSearch(base, training_data, cache)
    with tempfile.TemporaryDirectory(prefix="tv-tune-") as scratch:
        oracle = DefaultsFirstOracle(objective=OBJECTIVE, max_trials=trials,
                                     num_initial_points=INITIAL_POINTS, seed=base.seed)
        tuner = TimedTuner(oracle=oracle, hypermodel=hypermodel, directory=scratch,
                           project_name="head_search", overwrite=True,
                           csv_path=os.path.join(model_dir, TUNING_CSV))
        tuner.search(verbose=verbose)
        finished = [t for t in tuner.oracle.trials.values() if t.score is not None]
        if not finished:
            raise RuntimeError(f"every one of the {trials} tuning trials failed")
        best = tuner.oracle.get_best_trials(1)[0]
        rows = tuner.rows()
    tuning = Tuning(trial_config(base, best.hyperparameters), best.trial_id, rows)
    _write_csv(rows, os.path.join(model_dir, TUNING_CSV))
    plots.plot_tuning([row["trial"] for row in rows], [row["val_accuracy"] for row in rows],
                      best.trial_id, os.path.join(model_dir, TUNING_PNG),
                      [_head_name(row) for row in rows])
    logging.info("head search: trial %s won with validation accuracy %.4f",
                 best.trial_id, best.score)
    if base.seed is not None:  # the caller's refit then starts exactly like the trial did
        keras.utils.set_random_seed(base.seed)
    return tuning


def _row(trial, cost: Optional[tuple[int, float]], chosen: bool) -> dict:
    """tuning.csv's row for a trial; a hyperparameter inactive in it (width and dropout of a
    softmax head) is left blank."""
    values = trial.hyperparameters.values
    epochs, seconds = (cost[0], round(cost[1], 1)) if cost is not None else ("", "")
    return {"trial": trial.trial_id, **{name: values.get(name, "") for name in SEARCHED},
            "val_accuracy": float(trial.score) if trial.score is not None else "",
            "epochs": epochs, "seconds": seconds, "chosen": int(chosen)}


def _head_name(row: dict) -> str:
    """"softmax", or layers x width ("2x512") for a hidden head."""
    layers = int(row["hidden_layers"] or 0)  # also right for rows read back from tuning.csv
    return f"{layers}x{row['hidden_units']}" if layers else "softmax"


def _write_csv(rows: Sequence[dict], path: str) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def chosen_hyperparameters(config: TrainConfig) -> dict[str, Any]:
    """The searched fields of the winner's config (the head named, depth 0 for softmax)."""
    chosen = {name: getattr(config, name) for name in SEARCHED}
    if config.head == "softmax":
        chosen.update(hidden_layers=0, hidden_units=None, dropout=None)
    return {"head": config.head, **chosen}


def record(tuning: Tuning, metrics: dict, model_dir: str) -> dict:
    """Add the search to metrics.json and report.html (both written by the evaluation)."""
    from trainer.train.evaluate import METRICS_FILE

    best = next(row for row in tuning.rows if row["trial"] == tuning.best_trial)
    metrics = dict(metrics, tuning={
        "trials": len(tuning.rows), "best_trial": tuning.best_trial,
        "best_trial_validation_accuracy": best["val_accuracy"],
        "hyperparameters": chosen_hyperparameters(tuning.config), "file": TUNING_CSV})
    with open(os.path.join(model_dir, METRICS_FILE), "w") as f:
        json.dump(metrics, f, indent=2)
    report.add_section(model_dir, "tuning",
                       training_report.tuning_section(tuning.rows, tuning.best_trial, TUNING_PNG))
    return metrics
