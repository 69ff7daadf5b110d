"""trainer.train: fitting heads on committed runs, the report files, repeatability, the CLI."""

from __future__ import annotations

import csv
import json
import os

import pytest

from beam_jobs.cli.launch import main
from tests.helpers import fake_runs as fx
from trainer.train import command as train_module
from trainer.train.fit import TRAINING_LOG
from trainer.train.command import train
from trainer.train.config import TrainConfig

# Big steps and few epochs: the fake classes separate within a handful of epochs.
FAST = dict(epochs=12, patience=4, batch_size=32, learning_rate=0.05, seed=3)


@pytest.fixture(scope="module")
def separable_runs(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("extract"))
    fx.write_run(out, "20240101T000000-a", seed=1)
    fx.write_run(out, "20240102T000000-b", seed=2,
                 per_class={"train": 20, "validation": 5, "test": 5})
    return out


@pytest.fixture(scope="module")
def three_heads(separable_runs, tmp_path_factory) -> dict[str, tuple[str, dict]]:
    """Three trainings shared by the tests below: each head once, softmax twice (same seed)."""
    results = {}
    for name, head, weights in (("softmax", "softmax", "none"),
                                ("softmax_again", "softmax", "none"),
                                ("hidden", "hidden", "balanced")):
        model_dir = str(tmp_path_factory.mktemp(name))
        metrics = train(TrainConfig(head=head, class_weights=weights, **FAST), separable_runs,
                        model_dir, export=False)
        results[name] = (model_dir, metrics)
    return results


def _training_log(model_dir: str) -> list[dict[str, str]]:
    with open(os.path.join(model_dir, TRAINING_LOG)) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.parametrize("head", ["softmax", "hidden"])
def test_head_separates_separable_classes(three_heads, head):
    _, metrics = three_heads[head]
    assert metrics["test_accuracy"] > 0.9
    assert metrics["labels"] == list(fx.CLASSES)


def test_training_writes_metrics_plots_errors_and_best_checkpoint(three_heads):
    model_dir, metrics = three_heads["softmax"]
    for name in ("metrics.json", "confusion_matrix.csv", "confusion_matrix.png",
                 "training_curves.png", "errors.csv", "training_log.csv", "errors.png",
                 "embedding_pca.png", "report.html", "reliability.png",
                 os.path.join("checkpoints", "best.weights.h5")):
        assert os.path.getsize(os.path.join(model_dir, name)) > 0, name
    with open(os.path.join(model_dir, "metrics.json")) as f:
        written = json.load(f)
    assert written == json.loads(json.dumps(metrics))
    assert set(written["per_class"]) == set(fx.CLASSES)
    assert set(written["per_class"]["cat"]) == {"precision", "recall", "f1", "support"}
    calibration = written["calibration"]  # temperature scaling, measured on test
    assert {"temperature", "ece", "ece_uncalibrated", "nll", "nll_uncalibrated"} <= set(
        calibration)
    assert calibration["nll"] <= calibration["nll_uncalibrated"] + 0.05
    assert written["counts"]["test"] == {label: 15 + 5 for label in fx.CLASSES}
    assert sum(map(sum, written["confusion_matrix"])) == 3 * 20
    with open(os.path.join(model_dir, "confusion_matrix.csv")) as f:
        rows = list(csv.reader(f))
    assert rows[0] == [""] + list(fx.CLASSES)
    assert [row[0] for row in rows[1:]] == list(fx.CLASSES)
    with open(os.path.join(model_dir, "errors.csv")) as f:
        errors = list(csv.DictReader(f))
    assert len(errors) == written["errors"]
    confidences = [float(row["confidence"]) for row in errors]
    assert confidences == sorted(confidences, reverse=True)
    assert all(row["true"] != row["predicted"] for row in errors)


def test_same_seed_gives_identical_metrics(three_heads):
    (first_dir, first), (second_dir, second) = three_heads["softmax"], three_heads["softmax_again"]
    assert first == second
    assert _training_log(first_dir) == _training_log(second_dir)


def test_early_stopping_restores_the_best_epoch(tmp_path):
    """Noisy classes and a large step make validation accuracy wander; the kept model must be
    the best epoch's, not the last one's."""
    fx.write_run(str(tmp_path), "20240101T000000-a", noise=3.0, seed=5,
                 per_class={"train": 40, "validation": 30, "test": 10})
    config = TrainConfig(head="hidden", epochs=20, patience=3, batch_size=16,
                         learning_rate=0.3, seed=11)
    metrics = train(config, str(tmp_path), str(tmp_path / "model"), export=False)

    log = [float(row["val_accuracy"]) for row in _training_log(str(tmp_path / "model"))]
    assert log[-1] < max(log), "this setup should end past its best epoch"
    assert metrics["validation_accuracy"] == pytest.approx(max(log), abs=1e-6)


def test_cli_missing_data_exits_2_with_one_sentence(tmp_path, capsys):
    code = main(train_module.run, ["--data", str(tmp_path / "nowhere"),
                                   "--model_dir", str(tmp_path / "model")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "nowhere" in err


def test_metrics_report_top_k_accuracy_up_to_the_class_count(three_heads):
    _, metrics = three_heads["hidden"]
    top_k = metrics["top_k_accuracy"]
    assert list(top_k) == ["top_1", "top_2", "top_3"]  # 3 classes cap the default k=5
    assert top_k["top_1"] == pytest.approx(metrics["test_accuracy"])
    assert top_k["top_1"] <= top_k["top_2"] <= top_k["top_3"] == 1.0


def test_report_page_shows_every_picture_and_the_figures(three_heads):
    model_dir, metrics = three_heads["softmax"]
    with open(os.path.join(model_dir, "report.html")) as f:
        page = f.read()
    for picture in ("training_curves.png", "confusion_matrix.png", "errors.png",
                    "embedding_pca.png"):
        assert f'src="{picture}"' in page
    assert f"{metrics['test_accuracy']:.4f}" in page
    assert all(label in page for label in fx.CLASSES)


def _set_schema_version(run_dir: str, version: int) -> None:
    path = os.path.join(run_dir, "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    with open(path, "w") as f:
        json.dump(dict(manifest, schema_version=version), f)


BAD_DATA = {
    "uncommitted run": (lambda out: fx.write_run(out, "r", committed=False), "not a committed"),
    "unknown schema version": (lambda out: _set_schema_version(fx.write_run(out, "r"), 99),
                               "schema version 99"),
    "empty validation split": (lambda out: fx.write_run(
        out, "r", per_class={"train": 5, "validation": 0, "test": 5}), "validation split"),
    "single class": (lambda out: fx.write_run(out, "r", classes=("cat",)), "at least 2"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_cli_bad_data_exits_2_with_one_sentence(case, tmp_path, capsys):
    make, phrase = BAD_DATA[case]
    make(str(tmp_path / "out"))
    data = str(tmp_path / "out" / "runs" / "r")
    code = main(train_module.run, ["--data", data, "--model_dir", str(tmp_path / "model")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and phrase in err


def test_cli_flags_reach_the_config():
    args = train_module.parse_args(["--data", "d", "--model_dir", "m", "--format", "parquet",
                                    "--class_weights", "balanced", "--label_smoothing", "0.1",
                                    "--head", "hidden", "--top_k", "3"])
    config = train_module.config_from_args(args)
    assert (config.input_format, config.class_weights, config.label_smoothing, config.head,
            config.top_k) == ("parquet", "balanced", 0.1, "hidden", 3)
    assert config.tta is False
    tta_args = train_module.parse_args(["--data", "d", "--model_dir", "m", "--tta"])
    assert train_module.config_from_args(tta_args).tta is True


def test_cli_unknown_format_exits_2(tmp_path, capsys):
    fx.write_run(str(tmp_path / "out"), "r")
    code = main(train_module.run, ["--data", str(tmp_path / "out"), "--model_dir",
                                   str(tmp_path / "model"), "--format", "csv"])
    assert code == 2 and capsys.readouterr().err.startswith("error: ")
