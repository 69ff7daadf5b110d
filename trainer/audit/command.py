"""`tv-audit`: find mislabelled, duplicated and out-of-place images from their transfer values.

    tv-audit --data=DIR --output=DIR [--runs=ID,ID] [--k=20] [--folds=5] [--model_dir=DIR]
             [--duplicate_rule=pixels|standout|similarity] [--duplicate_pixels=P]

Writes label_issues.csv (every example, most suspicious first), near_duplicates.csv,
outliers.csv, summary.json and audit.html, each atomically; with --model_dir the model's
report.html gets a "Data quality" section.  Any of the CSVs can go to `tv-train --exclude`.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import time
from typing import Sequence

import numpy as np

from beam_jobs.cli import flags
from beam_jobs.cli.errors import UserError
from beam_jobs.runs.atomic import write_csv, write_json, write_text
from trainer.audit import pages as report
from trainer.audit.collection import Collection, load_collection
from trainer.audit.duplicates import RULES
from trainer.audit.findings import AuditConfig, Findings, check_collection, run_audit
from trainer.audit.folds import FoldConfig

LABEL_ISSUES_CSV = "label_issues.csv"
NEAR_DUPLICATES_CSV = "near_duplicates.csv"
OUTLIERS_CSV = "outliers.csv"
SUMMARY_JSON = "summary.json"
AUDIT_HTML = "audit.html"
EXAMPLE = """example:
  tv-audit --data=/tmp/tv --output=/tmp/audit
  tv-train --data=/tmp/tv --model_dir=/tmp/model --exclude=/tmp/audit/label_issues.csv"""
log = logging.getLogger(__name__)


def _join(folder: str, name: str) -> str:
    if "://" in folder:
        from apache_beam.io.filesystems import FileSystems
        return FileSystems.join(folder, name)
    return os.path.join(folder, name)


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _number(value: float) -> str:
    return "" if np.isnan(value) else f"{value:.6f}"


def _example(c: Collection, labels: np.ndarray, i: int) -> list:
    """The columns every per-image table starts with."""
    return [c.uris[i], c.image_ids[i], c.splits[i], labels[c.label_ids[i]]]


def write_tables(c: Collection, f: Findings, output: str) -> None:
    labels = np.asarray(c.labels, object)
    issues = f.label_issues
    write_csv(_join(output, LABEL_ISSUES_CSV),
              ["uri", "image_id", "split", "given_label", "suggested_label", "score", "flagged"],
              (_example(c, labels, i) + [labels[issues.suggested[i]], f"{issues.scores[i]:.6f}",
                                         _flag(issues.flagged[i])] for i in issues.order))
    pairs = f.duplicates
    write_csv(_join(output, NEAR_DUPLICATES_CSV),
              ["uri_a", "uri_b", "similarity", "split_a", "split_b", "label_a", "label_b",
               "cross_split", "label_mismatch", "image_id_a", "image_id_b", "standout",
               "pixels"],
              ([c.uris[a], c.uris[b], f"{s:.6f}", c.splits[a], c.splits[b],
                labels[c.label_ids[a]], labels[c.label_ids[b]],
                _flag(c.splits[a] != c.splits[b]), _flag(c.label_ids[a] != c.label_ids[b]),
                c.image_ids[a], c.image_ids[b], _number(score), _number(seen)]
               for a, b, s, score, seen in zip(pairs.a, pairs.b, pairs.similarity,
                                               pairs.standout, pairs.pixels)))
    out = f.outliers
    scored = out.ood_score is not None
    write_csv(_join(output, OUTLIERS_CSV),
              ["uri", "image_id", "split", "label", "neighbour_label", "distance", "flagged",
               "ood_score", "in_distribution"],
              (_example(c, labels, i) + [labels[out.neighbour_label[i]], f"{out.distance[i]:.6f}",
                                         _flag(out.flagged[i]),
                                         f"{out.ood_score[i]:.6f}" if scored else "",
                                         _flag(out.in_distribution[i]) if scored else ""]
               for i in out.order))


def summarise(c: Collection, f: Findings, config: AuditConfig) -> dict:
    labels, issues, pairs = c.labels, f.label_issues, f.duplicates
    confusions = collections.Counter(
        f"{labels[c.label_ids[i]]} → {labels[issues.suggested[i]]}"
        for i in np.flatnonzero(issues.flagged))
    return {
        "examples": len(c), "classes": len(labels),
        "splits": {s: int(n) for s, n in zip(*np.unique(c.splits.astype(str),
                                                         return_counts=True))},
        "runs": [run.run_id for run in c.runs], "backbone": c.runs[0].fingerprint,
        "label_issues": {"flagged": int(issues.flagged.sum()),
                         "most_common": dict(confusions.most_common(10))},
        "near_duplicates": {"pairs": len(pairs.a),
                            "cross_split": int(np.sum(c.splits[pairs.a] != c.splits[pairs.b])),
                            "label_mismatch": int(np.sum(c.label_ids[pairs.a]
                                                         != c.label_ids[pairs.b])),
                            "rule": config.duplicate_rule,
                            "threshold": {"pixels": config.duplicate_pixels,
                                          "standout": config.duplicate_standout,
                                          "similarity": config.duplicate_similarity
                                          }[config.duplicate_rule],
                            "pixels_checked": int(np.sum(~np.isnan(pairs.pixels)))},
        "outliers": {"flagged": int(f.outliers.flagged.sum())},
        "settings": {"folds": config.folds.folds, "k": config.k,
                     "knn_weight": config.knn_weight, "index": f.neighbours.index_type},
        "seconds": {name: round(s, 2) for name, s in f.seconds.items()},
        "files": [LABEL_ISSUES_CSV, NEAR_DUPLICATES_CSV, OUTLIERS_CSV, SUMMARY_JSON],
    }


def grids(c: Collection, f: Findings) -> dict[str, list[list[report.Tile]]]:
    """Which images each grid of the page shows, with their captions."""
    labels, issues = c.labels, f.label_issues
    shown = [i for i in issues.order if issues.flagged[i]] or list(issues.order)
    label_tiles = [[(c.uris[i], f"{labels[c.label_ids[i]]} → {labels[issues.suggested[i]]} "
                     f"({issues.scores[i]:.3f}, {c.splits[i]})")]
                   for i in shown[:report.LABEL_ISSUES_SHOWN]]
    cross = [(a, b, s) for a, b, s in zip(f.duplicates.a, f.duplicates.b, f.duplicates.similarity)
             if c.splits[a] != c.splits[b]][:report.DUPLICATES_SHOWN]
    pair_tiles = [[(c.uris[a], f"{c.splits[a]} {labels[c.label_ids[a]]}"),
                   (c.uris[b], f"{c.splits[b]} {labels[c.label_ids[b]]} · {s:.3f}")]
                  for a, b, s in cross]
    outlier_tiles = [[(c.uris[i], f"{labels[c.label_ids[i]]} ({f.outliers.distance[i]:.3f})")]
                     for i in f.outliers.order[:report.OUTLIERS_SHOWN]]
    return {"label_issues": label_tiles, "cross_split": pair_tiles, "outliers": outlier_tiles}


def audit(data: str, output: str, config: AuditConfig, run_ids: Sequence[str] = (),
          model_dir: str | None = None) -> dict:
    """Read, audit, write every output; returns summary.json's content."""
    from trainer.report.thumbnails import ThumbnailLoader

    start = time.perf_counter()
    collection = load_collection(data, run_ids)
    check_collection(collection, data)
    read_seconds = time.perf_counter() - start
    findings = run_audit(collection, config)
    write_tables(collection, findings, output)
    summary = summarise(collection, findings, config)
    summary["seconds"]["read"] = round(read_seconds, 2)
    section = report.data_quality_section(summary, grids(collection, findings),
                                          ThumbnailLoader(collection.runs).load)
    summary["files"].append(AUDIT_HTML)
    write_json(_join(output, SUMMARY_JSON), summary)
    write_text(_join(output, AUDIT_HTML), report.audit_page(section, summary))
    if model_dir:
        from trainer.report.page import add_section

        link = os.path.abspath(_join(output, AUDIT_HTML)) if "://" not in output else output
        add_section(model_dir, "data-quality", report.styled_section(section)
                    + f'<p>Full audit: <a href="{link}">{link}</a></p>')
    return summary


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults, folds = AuditConfig(), FoldConfig()
    parser = flags.argument_parser("tv-audit", __doc__.split("\n")[0], EXAMPLE)
    parser.add_argument("--data", required=True,
                        help="a committed run folder, or an extract output holding runs/")
    parser.add_argument("--output", required=True, help="where the CSVs, summary and page go")
    parser.add_argument("--runs", default="", help="comma-separated run ids (default: all)")
    parser.add_argument("--model_dir", default=None,
                        help="a tv-train model folder whose report.html gets the section")
    parser.add_argument("--k", type=int, default=defaults.k, help="nearest neighbours per image")
    parser.add_argument("--folds", type=int, default=folds.folds)
    parser.add_argument("--epochs", type=int, default=folds.epochs)
    parser.add_argument("--seed", type=int, default=folds.seed)
    parser.add_argument("--duplicate_rule", choices=RULES, default=defaults.duplicate_rule,
                        help="pixels: candidate pairs from the transfer values, confirmed by "
                             "their pixels (thumbprint correlation ≥ --duplicate_pixels); "
                             "standout: pairs that stand out from their neighbourhood after "
                             "whitening (score ≥ --duplicate_standout); similarity: cosine ≥ "
                             "--duplicate_similarity (see trainer/audit/duplicates.py)")
    for name in ("knn_weight", "duplicate_standout", "duplicate_similarity", "duplicate_pixels",
                 "outlier_mads"):
        parser.add_argument(f"--{name}", type=float, default=getattr(defaults, name))
    parser.add_argument("--verbose", action="store_true", help="log progress; show tracebacks")
    return flags.parse_args(parser, argv)


def run(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    if not os.path.exists(args.data) and "://" not in args.data:
        raise UserError(f"--data {args.data} does not exist.")
    if args.model_dir and not os.path.exists(os.path.join(args.model_dir, "report.html")):
        raise UserError(f"--model_dir {args.model_dir} holds no report.html; train a model "
                        f"there first or leave --model_dir out.")
    flags.check_writable(args.output, "--output")
    folds = FoldConfig(folds=args.folds, epochs=args.epochs, seed=args.seed)
    config = AuditConfig(folds=folds, k=args.k, knn_weight=args.knn_weight,
                         duplicate_rule=args.duplicate_rule,
                         duplicate_standout=args.duplicate_standout,
                         duplicate_similarity=args.duplicate_similarity,
                         duplicate_pixels=args.duplicate_pixels,
                         outlier_mads=args.outlier_mads)
    run_ids = [r for r in args.runs.split(",") if r]
    summary = audit(args.data, args.output, config, run_ids, args.model_dir)
    print(f"{summary['examples']} examples: {summary['label_issues']['flagged']} label issues, "
          f"{summary['near_duplicates']['pairs']} near-duplicate pairs "
          f"({summary['near_duplicates']['cross_split']} across splits), "
          f"{summary['outliers']['flagged']} outliers")
    print(f"outputs: {os.path.abspath(args.output) if '://' not in args.output else args.output}")
    return summary
