"""How well tv-audit finds planted problems in Fashion-MNIST, against cleanlab's own baseline.

    python benchmarks/audit_quality.py --cache=/tmp/audit_bench                 # 16k + 4k images
    python benchmarks/audit_quality.py --cache=/tmp/audit_bench --data=DIR      # an extracted run

Everything runs on the same transfer values (EfficientNet-Lite0, extracted once and cached):
1. label noise: a seeded share (2 %, 5 %, 10 %) of train/validation labels flipped to another
   class; ours (out-of-fold probabilities of our softmax head, blended with the neighbours'
   labels at several weights, then cleanlab) against the baseline (cleanlab on out-of-fold
   scikit-learn LogisticRegression probabilities, same folds).  precision@K (K = flipped) and
   precision / recall of the flagged set.
2. near duplicates: JPEG re-encodes of test images put in train and one-pixel upscales of train
   images put in test (a second run); the tv-audit CLI on the union, its time and peak memory;
   recall of the planted pairs and the share of reported pairs that were not planted; exact vs
   IVF search time and IVF's neighbour recall.
3. accuracy: tv-train on 5 % noisy labels, then with --exclude of the audit's flagged
   train/validation rows, and on the clean labels.
"""

from __future__ import annotations

import argparse
import atexit
import csv
import gc
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
atexit.register(gc.freeze)  # tensorflow-transform's exit crash (see beam_jobs.cli)

import audit_data  # noqa: E402

KNN_WEIGHTS = (0.0, 0.25, 0.5, 0.75)


def flip(label_ids: np.ndarray, splits: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Noisy copy of label_ids: `share` of train/validation rows moved to another class."""
    rng = np.random.default_rng(seed)
    candidates = np.flatnonzero(np.isin(splits, ["train", "validation"]))
    chosen = rng.choice(candidates, int(round(share * len(candidates))), replace=False)
    classes = int(label_ids.max()) + 1
    noisy = label_ids.copy()
    noisy[chosen] = (label_ids[chosen] + rng.integers(1, classes, len(chosen))) % classes
    return noisy


def baseline_probabilities(values, labels, folds_of, folds) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probabilities = np.zeros((len(labels), labels.max() + 1))
    for fold in range(folds):
        held = folds_of == fold
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300))
        model.fit(values[~held], labels[~held])
        probabilities[np.ix_(held, model.classes_)] = model.predict_proba(values[held])
    return probabilities


def scores(truth: np.ndarray, issues) -> dict:
    k = int(truth.sum())
    top = issues.order[:k]
    hits = int(truth[issues.flagged].sum())
    return {"p@K": truth[top].mean(), "flag_p": hits / max(1, issues.flagged.sum()),
            "flag_r": hits / max(1, k), "flagged": int(issues.flagged.sum())}


def label_noise(data: str, levels, seed: int, baseline: bool = True) -> list[dict]:
    from trainer.audit import label_issues as li
    from trainer.audit.collection import load_collection
    from trainer.audit.findings import AuditConfig
    from trainer.audit.folds import FoldConfig, fold_of, out_of_fold_probabilities
    from trainer.audit.neighbours import nearest_neighbours

    c = load_collection(audit_data.committed(data)[0])
    config = FoldConfig()
    neighbours = nearest_neighbours(c.transfer_values, AuditConfig().k)
    folds_of = fold_of(c.image_ids, config.folds)
    rows = []
    for level in levels:
        noisy = flip(c.label_ids, c.splits, level, seed)
        truth = noisy != c.label_ids
        row: dict = {"noise": level, "K": int(truth.sum())}
        if baseline:  # deterministic: same flips, folds and solver give the same figures
            start = time.perf_counter()
            base = li.find_label_issues(noisy, baseline_probabilities(
                c.transfer_values, noisy, folds_of, config.folds))
            row.update(baseline=scores(truth, base), baseline_s=time.perf_counter() - start)
        start = time.perf_counter()
        head = out_of_fold_probabilities(c.transfer_values, noisy, c.image_ids, len(c.labels),
                                         config)
        row["ours_s"] = time.perf_counter() - start
        votes = li.neighbour_label_distribution(neighbours, noisy, len(c.labels))
        for weight in KNN_WEIGHTS:
            row[f"ours knn={weight}"] = scores(truth, li.find_label_issues(
                noisy, li.blend(head, votes, weight)))
        row["knn only"] = scores(truth, li.find_label_issues(noisy, votes))
        print(json.dumps(row, default=float), flush=True)
        rows.append(row)
    return rows


def timed(command: list[str]) -> tuple[float, float]:
    """Run a command under /usr/bin/time -v: (wall seconds, peak RSS GiB)."""
    done = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True)
    if done.returncode:
        sys.exit(done.stderr[-3000:])
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", done.stderr)
    parts = [float(p) for p in wall.group(1).split(":")]
    return sum(p * 60 ** i for i, p in enumerate(reversed(parts))), rss / 2 ** 20


def duplicates(data: str, output: str, copies: int) -> dict:
    pairs = audit_data.extract_copies(data, copies)
    seconds, gib = timed([sys.executable, "-m", "trainer.audit", f"--data={data}",
                          f"--output={output}"])
    with open(os.path.join(output, "near_duplicates.csv")) as f:
        found = list(csv.DictReader(f))
    planted = {frozenset(p) for p in pairs}
    reported = {frozenset((r["uri_a"], r["uri_b"])): r for r in found}
    hits = [reported[p] for p in planted if p in reported]
    with open(os.path.join(output, "summary.json")) as f:
        summary = json.load(f)
    return {"planted": len(planted), "recall": len(hits) / len(planted),
            "cross_split_flagged": sum(r["cross_split"] == "true" for r in hits) / len(planted),
            "reported": len(reported),
            "not_planted": sum(p not in planted for p in reported) / max(1, len(reported)),
            "examples": summary["examples"], "seconds": seconds, "peak_gib": gib,
            "stages": summary["seconds"]}


def duplicate_sweep(data: str, copies: int) -> list[dict]:
    """Recall of the planted copies and reported pairs at several similarity thresholds."""
    from trainer.audit.collection import load_collection
    from trainer.audit.findings import AuditConfig
    from trainer.audit.neighbours import nearest_neighbours
    from trainer.audit.outliers import near_duplicates

    pairs = audit_data.extract_copies(data, copies)
    c = load_collection(data)
    neighbours = nearest_neighbours(c.transfer_values, AuditConfig().k)
    planted = {frozenset(p) for p in pairs}
    rows = []
    for threshold in (0.85, 0.9, 0.93, 0.95, 0.97, 0.99):
        found = near_duplicates(neighbours, c.uris, c.splits, threshold)
        reported = {frozenset((c.uris[a], c.uris[b])) for a, b in zip(found.a, found.b)}
        rows.append({"threshold": threshold, "recall": len(reported & planted) / len(planted),
                     "reported": len(reported), "not_planted": len(reported - planted)})
    return rows


def search_cost(data: str) -> dict:
    from trainer.audit.collection import load_collection
    from trainer.audit.neighbours import build_index, normalised

    vectors = normalised(load_collection(data).transfer_values)
    result = {}
    for name, limit in (("flat", len(vectors)), ("ivf", 0)):
        start = time.perf_counter()
        index = build_index(vectors, exact_limit=limit)
        _, found = index.search(vectors, 11)
        result[f"{name}_s"] = time.perf_counter() - start
        result[name] = found
    overlap = [len(set(a) & set(b)) / 11 for a, b in zip(result["flat"], result["ivf"])]
    return {"flat_s": result["flat_s"], "ivf_s": result["ivf_s"],
            "ivf_recall@10": float(np.mean(overlap)), "n": len(vectors)}


def accuracy(data: str, cache: str, share: float, seed: int) -> dict:
    from trainer.config import TrainConfig
    from trainer.train import train

    run_dir = audit_data.committed(data)[0]
    noisy = os.path.join(cache, f"noisy-{share}")
    truth = audit_data.noisy_copy(run_dir, noisy, share, seed)
    config = TrainConfig(seed=1)
    result: dict[str, float] = {"flipped": len(truth)}
    for name, source in (("clean", run_dir), ("noisy", noisy)):
        result[name] = train(config, source, os.path.join(cache, f"model-{name}"),
                             export=False)["test_accuracy"]
    audit_dir = os.path.join(cache, f"audit-noisy-{share}")
    subprocess.run([sys.executable, "-m", "trainer.audit", f"--data={noisy}",
                    f"--output={audit_dir}"], check=True)
    with open(os.path.join(audit_dir, "label_issues.csv")) as f:
        flagged = [r for r in csv.DictReader(f)
                   if r["flagged"] == "true" and r["split"] != "test"]
    exclude = os.path.join(audit_dir, "exclude_train_validation.txt")
    with open(exclude, "w") as f:
        f.write("".join(r["image_id"] + "\n" for r in flagged))
    result["excluded"] = len(flagged)
    result["excluded_were_flipped"] = sum(r["uri"] in truth for r in flagged) / max(1, len(flagged))
    result["noisy + exclude"] = train(config, noisy, os.path.join(cache, "model-excluded"),
                                      export=False, exclude=exclude)["test_accuracy"]
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", default="/tmp/audit_bench")
    parser.add_argument("--data", help="an extract output (default: extract into --cache)")
    parser.add_argument("--train", type=int, default=16000)
    parser.add_argument("--test", type=int, default=4000)
    parser.add_argument("--noise", default="0.02,0.05,0.10")
    parser.add_argument("--copies", type=int, default=150, help="planted copies of each kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no_baseline", action="store_true",
                        help="skip the slow LogisticRegression baseline (~400 s per level here)")
    parser.add_argument("--parts", default="duplicates,labels,accuracy,search")
    args = parser.parse_args()
    data = args.data or audit_data.extract(args.cache, args.train, args.test)
    parts = args.parts.split(",")
    report: dict[str, object] = {}
    steps = {
        "labels": lambda: label_noise(data, [float(x) for x in args.noise.split(",")],
                                      args.seed, not args.no_baseline),
        "duplicates": lambda: duplicates(data, os.path.join(args.cache, "audit"), args.copies),
        "search": lambda: search_cost(data),
        "sweep": lambda: duplicate_sweep(data, args.copies),
        "accuracy": lambda: accuracy(data, args.cache, 0.05, args.seed),
    }
    for part in parts:  # in the order given, each printed as it finishes
        report[part] = steps[part]()
        print(part, json.dumps(report[part], default=float), flush=True)
        with open(os.path.join(args.cache, "audit_quality.json"), "w") as f:
            json.dump(report, f, indent=2, default=float)


if __name__ == "__main__":
    main()
