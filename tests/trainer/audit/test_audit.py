"""tv-audit on a tiny collection with planted label flips, leaked copies and outliers."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from beam_jobs.cli.launch import main
from beam_jobs.runs.atomic import write_csv
from tests.helpers import audit_data as af
from trainer.audit import command as audit
from trainer.audit.duplicates import DUPLICATE_STANDOUT

FAST = ["--folds=3", "--epochs=15", "--k=5"]


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("data"))
    planted = af.write_collection(data)
    model_dir = tmp_path_factory.mktemp("model")
    (model_dir / "report.html").write_text("<html><body><h1>Training report</h1></body></html>")
    output = str(tmp_path_factory.mktemp("audit"))
    summary = audit.run(["--data", data, "--output", output, "--model_dir", str(model_dir),
                         *FAST])
    return planted, output, summary, str(model_dir)


def _csv(output: str, name: str) -> list[dict[str, str]]:
    with open(os.path.join(output, name), newline="") as f:
        return list(csv.DictReader(f))


def test_flipped_labels_rank_near_the_top_and_are_flagged(audited):
    planted, output, _, _ = audited
    rows = _csv(output, "label_issues.csv")
    top = [row["uri"] for row in rows[:len(planted.flipped) + 2]]
    assert len(set(top) & set(planted.flipped)) >= len(planted.flipped) - 1
    flagged = {row["uri"]: row for row in rows if row["flagged"] == "true"}
    assert len(set(flagged) & set(planted.flipped)) >= 4  # cleanlab is cautious at 200 rows
    for uri in set(flagged) & set(planted.flipped):
        assert flagged[uri]["suggested_label"] == planted.true_label[uri]


def test_label_issues_list_every_example_once_lowest_score_first(audited):
    _, output, summary, _ = audited
    rows = _csv(output, "label_issues.csv")
    assert list(rows[0]) == ["uri", "image_id", "split", "given_label", "suggested_label",
                             "score", "flagged"]
    assert len(rows) == len({row["image_id"] for row in rows}) == summary["examples"]
    scores = [float(row["score"]) for row in rows]
    assert scores == sorted(scores)


def test_copies_across_splits_are_found_and_flagged(audited):
    planted, output, summary, _ = audited
    pairs = {(row["uri_a"], row["uri_b"]): row for row in _csv(output, "near_duplicates.csv")}
    for original, copy in planted.copies:
        row = pairs[(copy, original)]  # the test image is kept, the train copy is `b`
        assert row["cross_split"] == "true" and float(row["similarity"]) > 0.99
        assert float(row["standout"]) >= DUPLICATE_STANDOUT and row["pixels"] == ""
    assert summary["near_duplicates"]["rule"] == "pixels"  # fake:// uris: no pixels to read
    first_original, first_copy = planted.copies[0]
    assert pairs[(first_copy, first_original)]["label_mismatch"] == "true"
    assert summary["near_duplicates"]["cross_split"] >= len(planted.copies)


def test_outliers_rank_first_and_are_flagged(audited):
    planted, output, _, _ = audited
    rows = _csv(output, "outliers.csv")
    assert {row["uri"] for row in rows[:2]} == set(planted.outliers)
    assert all(row["flagged"] == "true" for row in rows[:2])
    distances = [float(row["distance"]) for row in rows]
    assert distances == sorted(distances, reverse=True)
    # the exported model's ood_score (trainer.uncertainty.ood) agrees on the planted ones
    assert all(row["in_distribution"] == "false" for row in rows[:2])
    scores = {row["uri"]: float(row["ood_score"]) for row in rows}
    assert min(scores[uri] for uri in planted.outliers) > sorted(scores.values())[len(rows) // 2]


def test_summary_page_and_model_report_show_the_findings(audited):
    _, output, summary, model_dir = audited
    with open(os.path.join(output, "summary.json")) as f:
        assert json.load(f) == summary
    page = open(os.path.join(output, "audit.html"), encoding="utf-8").read()
    assert "Data quality" in page and "no image" in page  # fake:// uris have no picture
    report = open(os.path.join(model_dir, "report.html"), encoding="utf-8").read()
    assert report.count("<h2>Data quality</h2>") == 1 and "audit.html" in report
    assert not [name for name in os.listdir(output) if name.startswith(".")]


@pytest.mark.parametrize("case, sentence", [
    ("no_test", "no test split"),
    ("one_class", "single class"),
    ("too_few", "too few"),
    ("two_backbones", "different backbones"),
])
def test_bad_input_exits_2_with_one_sentence(tmp_path, capsys, case, sentence):
    data = str(tmp_path / "data")
    if case == "no_test":
        af.write_collection(data, per_class={"train": 10, "validation": 2}, problems=False)
    elif case == "one_class":
        af.write_collection(data, classes=("cat",), problems=False)
    elif case == "too_few":
        af.write_collection(data, per_class={"train": 1, "test": 1}, classes=("cat", "dog"),
                            problems=False)
    else:
        af.write_collection(data, problems=False)
        af.write_collection(data, run_id="20240102T000000-b", fingerprint="other@2/16px/32d",
                            problems=False)
    code = main(audit.run, ["--data", data, "--output", str(tmp_path / "out"), *FAST])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and sentence in err
    assert not os.path.exists(tmp_path / "out" / "label_issues.csv")


def test_a_failed_write_leaves_the_previous_csv_whole(tmp_path):
    path = str(tmp_path / "label_issues.csv")
    write_csv(path, ["uri"], [["old"]])

    def rows_then_crash():
        yield ["new-1"]
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_csv(path, ["uri"], rows_then_crash())
    assert open(path).read() == "uri\nold\n"
    assert os.listdir(tmp_path) == ["label_issues.csv"]


def test_ivf_search_above_the_exact_limit_finds_the_planted_copies():
    import numpy as np

    from trainer.audit.neighbours import nearest_neighbours

    rng = np.random.default_rng(0)
    values = rng.normal(size=(400, 16)).astype(np.float32)
    values[390:] = values[:10] + rng.normal(0, 0.01, (10, 16)).astype(np.float32)
    exact = nearest_neighbours(values, 3)
    ivf = nearest_neighbours(values, 3, exact_limit=100)
    assert (exact.index_type, ivf.index_type) == ("IndexFlatIP", "IndexIVFFlat")
    assert list(ivf.indices[390:, 0]) == list(range(10)) == list(exact.indices[390:, 0])
    assert not np.any(ivf.indices == np.arange(400)[:, None])  # never its own neighbour


def test_help_ends_with_a_worked_example_including_exclude(capsys):
    with pytest.raises(SystemExit) as exit_:
        audit.run(["--help"])
    assert exit_.value.code == 0
    example = capsys.readouterr().out.split("example:")[1]
    assert "tv-audit --data=" in example and "--exclude=" in example


def test_only_the_original_view_of_each_image_is_audited(tmp_path):
    import numpy as np

    from schemas import record
    from trainer.audit.collection import load_collection

    rows = af._rows("r", {"train": 4, "test": 2}, "fake@1/16px/32d", af.CLASSES, seed=0)
    views = [dict(row, **{record.VIEW: view,
                          record.TRANSFER_VALUES: row[record.TRANSFER_VALUES] + view + 5.0})
             for row in rows if row[record.SPLIT] == "train" for view in (1, 2, record.MIRROR_VIEW)]
    af.write_parquet_run(str(tmp_path), "20240101T000000-a", rows + views, "fake@1/16px/32d")
    collection = load_collection(str(tmp_path))
    assert sorted(collection.uris) == sorted(row[record.URI] for row in rows)
    originals = {row[record.URI]: row[record.TRANSFER_VALUES] for row in rows}
    for uri, values in zip(collection.uris, collection.transfer_values):
        np.testing.assert_allclose(values, originals[uri])


def _look_alikes_and_copies(seed: int = 0):
    """200 images in 64-d: a crowd of 100 look-alikes and 95 others; 5 of the others have a
    copy with small noise, less similar to its original than many look-alikes are."""
    import numpy as np

    rng = np.random.default_rng(seed)
    crowd = rng.normal(0, 1.0, 64) + rng.normal(0, 0.05, (100, 64))  # cosine ≈ 0.997
    spread = rng.normal(0, 1.0, (95, 64))
    copies = spread[:5] + rng.normal(0, 0.2, (5, 64))  # cosine ≈ 0.98 to the original
    values = np.concatenate([crowd, spread, copies]).astype(np.float32)
    uris = np.asarray([f"img{i:03d}" for i in range(len(values))], object)
    splits = np.asarray(["train"] * 195 + ["test"] * 5, object)
    return values, uris, splits, {frozenset((f"img{100 + i:03d}", f"img{195 + i:03d}"))
                                  for i in range(5)}


@pytest.mark.parametrize("exact_limit", [None, 50])  # 50: the IVF index on 200 vectors
def test_standout_rule_finds_copies_that_a_similarity_threshold_buries(exact_limit):
    from trainer.audit.duplicates import near_duplicates
    from trainer.audit.neighbours import nearest_neighbours

    values, uris, splits, planted = _look_alikes_and_copies()
    neighbours = nearest_neighbours(values, 10)
    standout = near_duplicates(values, neighbours, uris, splits, "standout", standout=1.0,
                               exact_limit=exact_limit)  # the default is set on real values
    found = {frozenset((uris[a], uris[b])) for a, b in zip(standout.a, standout.b)}
    assert found == planted
    assert all(splits[a] == "test" for a in standout.a)  # the test image is kept
    copy_similarity = float(standout.similarity.min())
    threshold = near_duplicates(values, neighbours, uris, splits, "similarity",
                                similarity=copy_similarity)
    assert len(threshold.a) > 5 * len(planted)  # the crowd's pairs come first
    assert all(np.isnan(threshold.standout))


def test_bad_duplicate_rule_exits_2(tmp_path, capsys):
    code = main(audit.run, ["--data", str(tmp_path), "--output", str(tmp_path / "o"),
                            "--duplicate_rule=fuzzy"])
    assert code == 2 and "--duplicate_rule" in capsys.readouterr().err
