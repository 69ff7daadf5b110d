"""trainer.train.tune: `tv-train --tune=N` searches heads on values read once and exports the best."""

from __future__ import annotations

import csv
import glob
import json
import os

import keras
import pytest

from beam_jobs.cli.launch import main
from tests.helpers import fake_runs as fx
from trainer.train import command as train_module
from trainer.train import tune
from trainer.train.config import TrainConfig
from trainer.train.data.dataset import open_training_data
from trainer.train.data.split_cache import SplitCache
from trainer.train.heads import build_model

# Few epochs: each trial must take seconds; the fake classes separate within a handful.
FAST_FLAGS = ["--epochs=4", "--patience=2", "--seed=3"]


@pytest.fixture(scope="module")
def tuned(tiny_backbone, tmp_path_factory) -> tuple[str, dict]:
    data = str(tmp_path_factory.mktemp("extract"))
    fx.write_servable_run(data, tiny_backbone)
    model_dir = str(tmp_path_factory.mktemp("model"))
    code = main(train_module.run, ["--data", data, "--model_dir", model_dir, "--tune=3",
                                   *FAST_FLAGS])
    assert code == 0
    with open(os.path.join(model_dir, "metrics.json")) as f:
        return model_dir, json.load(f)


def _tuning_rows(model_dir: str) -> list[dict[str, str]]:
    with open(os.path.join(model_dir, tune.TUNING_CSV)) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_tuning_csv_has_one_row_per_trial_with_every_hyperparameter(tuned):
    model_dir, _ = tuned
    rows = _tuning_rows(model_dir)
    assert [row["trial"] for row in rows] == ["0", "1", "2"]
    assert set(tune.SEARCHED) | {"val_accuracy", "epochs", "seconds"} <= set(rows[0])
    for row in rows:
        assert 0.0 <= float(row["val_accuracy"]) <= 1.0
        assert 1 <= int(row["epochs"]) <= 4  # --epochs caps every trial
        assert float(row["seconds"]) > 0
    assert sum(int(row["chosen"]) for row in rows) == 1
    # Trial 0 is the known good head from the space's defaults.
    assert (rows[0]["hidden_layers"], rows[0]["hidden_units"], rows[0]["batch_size"]) == (
        "1", "2048", "128")


def test_exported_model_and_metrics_carry_the_best_trial(tuned):
    model_dir, metrics = tuned
    rows = _tuning_rows(model_dir)
    best = max(rows, key=lambda row: float(row["val_accuracy"]))
    assert best["chosen"] == "1"
    chosen = metrics["tuning"]["hyperparameters"]
    assert metrics["tuning"]["best_trial"] == best["trial"]
    assert chosen["hidden_layers"] == int(best["hidden_layers"])
    assert chosen["learning_rate"] == pytest.approx(float(best["learning_rate"]))
    assert chosen["batch_size"] == int(best["batch_size"])
    head = keras.models.load_model(os.path.join(model_dir, train_module.HEAD_FILE), compile=False)
    widths = [layer.units for layer in head.layers if isinstance(layer, keras.layers.Dense)]
    hidden = [int(best["hidden_units"])] * chosen["hidden_layers"]
    assert widths == hidden + [len(fx.CLASSES)]
    # Every trial starts from the same seed, so the refit is the winning trial again.
    assert metrics["validation_accuracy"] == pytest.approx(float(best["val_accuracy"]), abs=1e-6)
    assert os.path.isdir(os.path.join(model_dir, "serving"))


def test_report_shows_the_search_and_its_plot(tuned):
    model_dir, _ = tuned
    with open(os.path.join(model_dir, "report.html")) as f:
        page = f.read()
    assert "Head search (3 trials" in page and f'src="{tune.TUNING_PNG}"' in page
    assert os.path.getsize(os.path.join(model_dir, tune.TUNING_PNG)) > 0
    assert page.count("<!-- section:tuning -->") == 1


def test_trials_never_read_the_shards_again(tmp_path):
    """Once the splits are cached, the shards can vanish: every trial trains from memory."""
    run_dir = fx.write_run(str(tmp_path), "20240101T000000-a", seed=1)
    training_data = open_training_data(str(tmp_path))
    config = TrainConfig(epochs=3, patience=1, seed=5)
    cache = SplitCache(training_data, config)
    shards = glob.glob(os.path.join(run_dir, "*.tfrecord.gz"))
    shards += glob.glob(os.path.join(run_dir, "parquet", "*.parquet"))
    assert shards
    for shard in shards:
        os.remove(shard)
    found = tune.search(config, training_data, cache, str(tmp_path), trials=2)
    assert len(found.rows) == 2 and found.best_trial in {"0", "1"}


def test_a_search_stopped_midway_keeps_its_finished_trials(tmp_path, monkeypatch, capsys):
    """tuning.csv is rewritten after every trial and each trial prints one progress line, so
    an interrupted search (here: Ctrl-C during the second trial) still says what it found."""
    fx.write_run(str(tmp_path / "data"), "20240101T000000-a", seed=1)
    training_data = open_training_data(str(tmp_path / "data"))
    config = TrainConfig(epochs=2, patience=1, seed=5)
    fit = tune.HeadSearch.fit
    started = []

    def interrupted_second_trial(self, *args, **kwargs):
        started.append(1)
        if len(started) == 2:
            raise KeyboardInterrupt
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(tune.HeadSearch, "fit", interrupted_second_trial)
    with pytest.raises(KeyboardInterrupt):
        tune.search(config, training_data, SplitCache(training_data, config), str(tmp_path),
                    trials=3)
    rows = _tuning_rows(str(tmp_path))
    assert [row["trial"] for row in rows] == ["0"] and rows[0]["chosen"] == "1"
    assert 0.0 <= float(rows[0]["val_accuracy"]) <= 1.0 and float(rows[0]["seconds"]) > 0
    out = capsys.readouterr().out
    assert "head search: trial 0 done (1/3)" in out
    assert f"best so far trial 0, validation accuracy {float(rows[0]['val_accuracy']):.4f}" in out


@pytest.mark.parametrize("layers", [1, 2])
def test_hidden_layers_sets_the_head_depth(layers):
    config = TrainConfig(head="hidden", hidden_layers=layers, hidden_units=7)
    model = build_model(config, fx.FEATURE_DIM, len(fx.CLASSES))
    dense = [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert dense == [7] * layers + [len(fx.CLASSES)] and len(dropouts) == layers


@pytest.mark.parametrize("flag", ["--tune=-1", "--hidden_layers=0"])
def test_cli_bad_tune_or_depth_exits_2(flag, tmp_path, capsys):
    fx.write_run(str(tmp_path / "out"), "r")
    code = main(train_module.run, ["--data", str(tmp_path / "out"), "--model_dir",
                                   str(tmp_path / "model"), flag])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1


def test_cli_tune_and_depth_flags_reach_train():
    args = train_module.parse_args(["--data", "d", "--model_dir", "m", "--tune", "4",
                                    "--head", "hidden", "--hidden_layers", "2"])
    assert args.tune == 4 and train_module.config_from_args(args).hidden_layers == 2
    assert train_module.parse_args(["--data", "d", "--model_dir", "m"]).tune == 0
