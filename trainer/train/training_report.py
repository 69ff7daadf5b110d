"""`report.html` of tv-train: one page that shows a training run — the figures, the plots, the mistakes.

Plain HTML with relative links to the PNGs beside it, so the model folder can be copied or
served as it is; no template engine, every value escaped.
"""

from __future__ import annotations

import csv
import html
import os
from typing import Sequence

from beam_jobs.runs.atomic import write_text
from trainer.report.page import REPORT_FILE, cell, html_page, table
from trainer.train.config import TrainConfig
from trainer.train.data.views import describe_views

PICTURES = (("training_curves.png", "Training curves"),
            ("confusion_matrix.png", "Confusion matrix"),
            ("errors.png", "Most confident mistakes"),
            ("embedding_pca.png", "Transfer values, 2-D PCA"),
            ("reliability.png", "Reliability (test): before and after temperature scaling"))
_ERRORS_LISTED = 20
_IMAGE_STYLE = "\nimg{max-width:100%;border:1px solid #ddd;margin:.5em 0}"




def _summary(metrics: dict, config: TrainConfig) -> str:
    rows = [["test accuracy", f"{metrics['test_accuracy']:.4f}"],
            ["validation accuracy", f"{metrics['validation_accuracy']:.4f}"]]
    rows += [[name.replace("_", "-") + " accuracy", f"{value:.4f}"]
             for name, value in metrics.get("top_k_accuracy", {}).items() if name != "top_1"]
    rows += [["test mistakes", metrics.get("errors", "")],
             ["examples train / validation / test",
              " / ".join(str(sum(metrics["counts"][s].values())) for s in
                         ("train", "validation", "test"))],
             *([["excluded (--exclude)", f"{metrics['excluded']['images']} ("
                 + ", ".join(f"{s} {metrics['excluded'][s]}" for s in ("train", "validation",
                                                                       "test")) + ")"]]
               if "excluded" in metrics else []),
             ["head", f"{config.head} (lr {config.learning_rate}, batch {config.batch_size}, "
                      f"seed {config.seed})"],
             ["normalisation", metrics.get("normalisation", "")],
             ["views", f"{describe_views(metrics.get('views', {}))}; TTA {metrics.get('tta')}"
                       + (f" (test accuracy without it {metrics['without_tta']['test_accuracy']:.4f})"
                          if "without_tta" in metrics else "")],
             *_uncertainty_rows(metrics),
             ["backbone", metrics.get("backbone", "")],
             ["runs", ", ".join(metrics.get("runs", []))]]
    return table(["", "value"], rows)


def _uncertainty_rows(metrics: dict) -> list[list[str]]:
    """Calibration (ECE and NLL before → after) and the OOD threshold, when recorded."""
    rows = []
    if "calibration" in metrics:
        c = metrics["calibration"]
        rows.append(["calibration (test)", f"temperature {c['temperature']:.3f}; ECE "
                     f"{c['ece_uncalibrated']:.4f} → {c['ece']:.4f}; NLL "
                     f"{c['nll_uncalibrated']:.4f} → {c['nll']:.4f}"])
    if "ood" in metrics:
        o = metrics["ood"]
        rows.append(["out-of-distribution", f"{o['method']} score, threshold {o['threshold']:.3f}"
                     f" (95 % of validation within); test within "
                     f"{o['test_in_distribution']:.1%}; {o['bytes'] / 1e6:.2f} MB in the export"])
    return rows


def _per_class(metrics: dict) -> str:
    rows = [[label, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}",
             m["support"]] for label, m in metrics["per_class"].items()]
    return table(["class", "precision", "recall", "F1", "support"], rows)


def _errors(model_dir: str) -> str:
    path = os.path.join(model_dir, "errors.csv")
    if not os.path.exists(path):
        return ""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return table(rows[0], rows[1:_ERRORS_LISTED + 1]) if len(rows) > 1 else "<p>none</p>"


def write_report(model_dir: str, metrics: dict, config: TrainConfig) -> str:
    """Write `<model_dir>/report.html` and return its path."""
    pictures = "".join(f"<h2>{html.escape(title)}</h2><img src=\"{name}\" alt=\"{name}\">"
                       for name, title in PICTURES if os.path.exists(os.path.join(model_dir, name)))
    page = html_page("Training report", _IMAGE_STYLE,
                     f"{_summary(metrics, config)}<h2>Per class (test)</h2>{_per_class(metrics)}"
            f"{pictures}<h2>Most confident mistakes (first {_ERRORS_LISTED}, errors.csv)</h2>"
            f"{_errors(model_dir)}<p>Files: <a href=\"metrics.json\">metrics.json</a>, "
            f"<a href=\"confusion_matrix.csv\">confusion_matrix.csv</a>, "
            f"<a href=\"errors.csv\">errors.csv</a>, <a href=\"training_log.csv\">"
                     f"training_log.csv</a>; TensorBoard: <code>tensorboard --logdir logs</code>.</p>")
    path = os.path.join(model_dir, REPORT_FILE)
    write_text(path, page)
    return path


def tuning_section(rows: Sequence[dict], chosen: str, picture: str) -> str:
    """The head search (`tv-train --tune`): its plot and every trial (tuning.csv's rows),
    best first, the chosen one marked; a failed trial (no accuracy) comes last."""
    ranked = sorted(rows, key=lambda row: 1.0 if row["val_accuracy"] == ""
                    else -float(row["val_accuracy"]))
    columns = [name for name in rows[0] if name != "chosen"] if rows else []
    trials = table(columns + [""], [[cell(row[name]) for name in columns]
                                    + ["chosen" if row["trial"] == chosen else ""]
                                    for row in ranked])
    return (f"<h2>Head search ({len(rows)} trials, tuning.csv)</h2>"
            f"<p>Trial {html.escape(chosen)} had the best validation accuracy; the exported "
            f"model is that configuration trained again.</p>"
            f"<img src=\"{picture}\" alt=\"{picture}\">{trials}")
