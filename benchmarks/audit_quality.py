"""How well tv-audit finds planted problems in Fashion-MNIST, against cleanlab's own baseline.

    python benchmarks/audit_quality.py --cache=/tmp/audit_bench                 # 16k + 4k images
    python benchmarks/audit_quality.py --cache=/tmp/audit_bench --data=DIR      # an extracted run
    python benchmarks/audit_quality.py --cache=/tmp/audit_bench --data=DIR --parts=sweep
    python benchmarks/audit_quality.py --cache=/tmp/s --data=DIR --parts=search \
        --sizes=0,300000 --lists_per_root=1 --threads=1

Everything runs on the same transfer values (EfficientNet-Lite0, extracted once and cached):
1. label noise: a seeded share (2 %, 5 %, 10 %) of train/validation labels flipped to another
   class; ours (out-of-fold probabilities of our softmax head, blended with the neighbours'
   labels at several weights, then cleanlab) against the baseline (cleanlab on out-of-fold
   scikit-learn LogisticRegression probabilities, same folds).  precision@K (K = flipped) and
   precision / recall of the flagged set.
2. near duplicates: JPEG re-encodes of test images put in train and one-pixel upscales of train
   images put in test (a second run).  `sweep`: both --duplicate_rule values side by side at
   several thresholds (recall of the planted pairs, pairs reported, not planted, precision);
   `duplicates`: the tv-audit CLI with each rule on the union, its time and peak memory.
   `search`: exact vs IVF all-pairs search time and IVF's recall@10 at several sizes
   (`--sizes=0,300000`: the collection, then jittered synthetic copies of it).
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


def _pair_scores(planted: set, reported: set) -> dict:
    hits = len(reported & planted)
    return {"recall": hits / len(planted), "reported": len(reported),
            "not_planted": len(reported - planted), "precision": hits / max(1, len(reported))}


def duplicates(data: str, output: str, copies: int, rule: str) -> dict:
    """The tv-audit CLI with `rule` on the union (copies planted as a second run)."""
    pairs = audit_data.extract_copies(data, copies)
    output = f"{output}-{rule}"
    seconds, gib = timed([sys.executable, "-m", "trainer.audit", f"--data={data}",
                          f"--output={output}", f"--duplicate_rule={rule}"])
    with open(os.path.join(output, "near_duplicates.csv")) as f:
        found = list(csv.DictReader(f))
    planted = {frozenset(p) for p in pairs}
    reported = {frozenset((r["uri_a"], r["uri_b"])): r for r in found}
    hits = [reported[p] for p in planted if p in reported]
    with open(os.path.join(output, "summary.json")) as f:
        summary = json.load(f)
    return {"rule": rule, **_pair_scores(planted, set(reported)),
            "cross_split_flagged": sum(r["cross_split"] == "true" for r in hits) / len(planted),
            "examples": summary["examples"], "seconds": seconds, "peak_gib": gib,
            "stages": summary["seconds"]}


SWEEP = {"similarity": (0.85, 0.88, 0.9, 0.93, 0.95, 0.97),
         "standout": (0.2, 0.25, 0.3, 0.33, 0.36, 0.4, 0.5)}


def duplicate_sweep(data: str, copies: int) -> list[dict]:
    """Recall of the planted copies and pairs reported by each rule at several thresholds."""
    from trainer.audit.collection import load_collection
    from trainer.audit.duplicates import near_duplicates
    from trainer.audit.findings import AuditConfig
    from trainer.audit.neighbours import nearest_neighbours

    pairs = audit_data.extract_copies(data, copies)
    c = load_collection(data)
    neighbours = nearest_neighbours(c.transfer_values, AuditConfig().k)
    planted = {frozenset(p) for p in pairs}
    rows = []
    for rule, thresholds in SWEEP.items():  # the pairs at a threshold ⊂ those at a lower one
        start = time.perf_counter()
        lowest = near_duplicates(c.transfer_values, neighbours, c.uris, c.splits, rule,
                                 standout=min(thresholds), similarity=min(thresholds))
        seconds = time.perf_counter() - start
        evidence = lowest.standout if rule == "standout" else lowest.similarity
        for threshold in thresholds:
            keep = evidence >= threshold
            reported = {frozenset((c.uris[a], c.uris[b]))
                        for a, b in zip(lowest.a[keep], lowest.b[keep])}
            rows.append({"rule": rule, "threshold": threshold,
                         **_pair_scores(planted, reported), "seconds": seconds})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def jittered(vectors: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """n synthetic transfer values: real ones picked at random plus Gaussian noise at 30 % of
    each dimension's spread, so the set keeps the real clusters (IVF's best case is structure,
    its worst uniform noise) at sizes no extraction here reaches."""
    from trainer.audit.neighbours import normalised

    rng = np.random.default_rng(seed)
    spread = vectors.std(axis=0) * 0.3
    out = np.empty((n, vectors.shape[1]), np.float32)
    for start in range(0, n, 50_000):
        rows = rng.integers(0, len(vectors), min(50_000, n - start))
        noise = rng.standard_normal((len(rows), vectors.shape[1]), np.float32)
        out[start:start + len(rows)] = vectors[rows] + noise * spread
    return normalised(out)


def search_scaling(data: str, sizes: list[int], lists_per_root: list[float],
                   nprobes=(4, 8, 16, 32, 64), queries: int = 2000, k: int = 10,
                   threads: int = 0) -> list[dict]:
    """Exact vs IVF all-pairs search time (extrapolated from `queries` random queries: the
    cost per query is constant) and IVF's recall of the exact top-k, at several sizes (0: the
    collection itself; others: `jittered` copies of it)."""
    import faiss

    from trainer.audit.collection import load_collection
    from trainer.audit.neighbours import build_index, normalised

    if threads:  # one thread: the work compared, not how a busy machine schedules OpenMP
        faiss.omp_set_num_threads(threads)
    real = normalised(load_collection(data).transfer_values)
    rows = []
    for n in sizes:
        vectors = real if n in (0, len(real)) else jittered(real, n)
        n = len(vectors)
        asked = vectors[np.random.default_rng(1).choice(n, min(queries, n), replace=False)]
        scale = n / len(asked)
        start = time.perf_counter()
        flat = faiss.IndexFlatIP(vectors.shape[1])
        flat.add(vectors)
        _, truth = flat.search(asked, k + 1)
        row: dict = {"n": n, "exact_s": (time.perf_counter() - start) * scale}
        del flat
        for factor in lists_per_root:
            start = time.perf_counter()
            ivf = build_index(vectors, exact_limit=0, lists_per_root=factor)
            built = time.perf_counter() - start
            row[f"ivf {ivf.nlist} lists build_s"] = built
            for nprobe in nprobes:
                ivf.nprobe = nprobe
                start = time.perf_counter()
                _, found = ivf.search(asked, k + 1)
                recall = np.mean([len(set(a) & set(b)) / (k + 1) for a, b in zip(truth, found)])
                row[f"ivf {ivf.nlist} nprobe={nprobe}"] = {
                    "s": built + (time.perf_counter() - start) * scale, "recall@k": recall}
            del ivf
        print(json.dumps(row, default=float), flush=True)
        rows.append(row)
    return rows


def accuracy(data: str, cache: str, share: float, seed: int) -> dict:
    from trainer.train.command import train
    from trainer.train.config import TrainConfig

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
    parser.add_argument("--sizes", default="0",
                        help="search part: sizes (0: the collection; others synthetic)")
    parser.add_argument("--lists_per_root", default="4",
                        help="search part: IVF cells per √N to compare")
    parser.add_argument("--queries", type=int, default=2000,
                        help="search part: queries timed (exact search extrapolated from them)")
    parser.add_argument("--threads", type=int, default=0,
                        help="search part: faiss threads (0: all cores)")
    args = parser.parse_args()
    data = args.data or audit_data.extract(args.cache, args.train, args.test)
    parts = args.parts.split(",")
    os.makedirs(args.cache, exist_ok=True)
    report: dict[str, object] = {}
    steps = {
        "labels": lambda: label_noise(data, [float(x) for x in args.noise.split(",")],
                                      args.seed, not args.no_baseline),
        "duplicates": lambda: [duplicates(data, os.path.join(args.cache, "audit"), args.copies,
                                          rule) for rule in ("similarity", "standout")],
        "search": lambda: search_scaling(data, [int(n) for n in args.sizes.split(",")],
                                         [float(x) for x in args.lists_per_root.split(",")],
                                         queries=args.queries, threads=args.threads),
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
