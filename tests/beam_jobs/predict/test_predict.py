"""tv-predict: image files and the Beam batch job predict from the pixels extraction feeds the
backbone, bad images become dead letters or one sentence, and batch output is committed."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from beam_jobs.cli.launch import main
from beam_jobs.images.decode import decode_for_backbone
from beam_jobs.predict import model as predict_model
from beam_jobs.predict import pipeline as batch_predict
from tests.helpers import fake_runs as fx
from tests.helpers import images as make_data
from trainer.serve import export, predict

# Every format extraction reads, at sizes the tiny backbone (16 px) really resizes.
FORMATS = {
    "random.png": lambda: fx.random_png(1, 23, 31),
    "photo.jpg": make_data.plain_jpeg,  # 64x48: DCT-scaled by 2 on the extraction path
    "copy.tiff": lambda: make_data.png_bytes(np.asarray(
        make_data._gradient(30, 20)), fmt="TIFF"),
    "cmyk.jpg": make_data.cmyk_jpeg,
    "deep.png": make_data.png_16bit,
    "rotated.jpg": make_data.exif_rotated_jpeg,
    "frames.webp": make_data.animated_webp,
}


@pytest.fixture(scope="module")
def model_dir(exported) -> str:
    return exported[2]


@pytest.fixture(scope="module")
def legacy_model_dir(model_dir, tmp_path_factory) -> str:
    """The same export as written before preprocessing.json existed."""
    legacy = str(tmp_path_factory.mktemp("legacy") / "model")
    shutil.copytree(model_dir, legacy)
    os.remove(os.path.join(legacy, export.PREPROCESSING_FILE))
    return legacy


@pytest.fixture(scope="module")
def image_files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("images")
    paths = {}
    for name, make in FORMATS.items():
        (folder / name).write_bytes(make())
        paths[name] = str(folder / name)
    return paths


def _extraction_probabilities(exported, paths: list[str]) -> np.ndarray:
    """The extraction path step by step, no export: decode_for_backbone → backbone → head."""
    head, backbone, _ = exported
    pixels = np.stack([decode_for_backbone(open(p, "rb").read(), backbone.image_size)
                       for p in paths])
    return head.predict_on_batch(backbone(pixels))


def _as_matrix(results, paths: list[str]) -> np.ndarray:
    labels = sorted(fx.CLASSES)
    return np.array([[dict(results[p])[label] for label in labels] for p in paths])


def test_every_format_extraction_reads_predicts_as_the_extraction_path(exported, image_files,
                                                                       capsys):
    paths = list(image_files.values())
    results = predict.run(["--model", exported[2], "--top_k", str(len(fx.CLASSES)), *paths])

    assert os.path.exists(os.path.join(exported[2], export.PREPROCESSING_FILE))
    np.testing.assert_allclose(_as_matrix(results, paths),
                               _extraction_probabilities(exported, paths), atol=1e-5)
    assert capsys.readouterr().out.splitlines()[0] == paths[0]


def test_export_without_preprocessing_file_falls_back_to_bytes_and_still_reads_tiff(
        exported, legacy_model_dir, image_files):
    small = [image_files[name] for name in ("random.png", "copy.tiff", "cmyk.jpg")]
    assert not predict_model.read_preprocessing(legacy_model_dir).takes_pixels

    results = predict.run(["--model", legacy_model_dir, "--top_k", "3", *small])

    np.testing.assert_allclose(_as_matrix(results, small),
                               _extraction_probabilities(exported, small), atol=1e-5)


def test_unreadable_file_is_one_sentence_after_the_others_are_printed(model_dir, image_files,
                                                                      tmp_path, capsys):
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")

    assert main(predict.run, ["--model", model_dir, image_files["random.png"], str(text)]) == 2

    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == image_files["random.png"]
    errors = [line for line in captured.err.strip().splitlines()  # this export has no ood_score
              if line != predict_model.OLD_EXPORT_NOTE]
    assert errors == [
        f"error: 1 of 2 images could not be classified: {text} is not an image "
        f"(not a known image format; starts with b'not a photo')."]


def _batch_folder(root) -> str:
    """Good images in class folders, plus a cut-short JPEG and a text file named .jpg."""
    for label, names in (("cat", ("random.png", "photo.jpg")), ("dog", ("copy.tiff",))):
        os.makedirs(root / label, exist_ok=True)
        for name in names:
            (root / label / name).write_bytes(FORMATS[name]())
    (root / "dog" / "cut.jpg").write_bytes(make_data.truncated(make_data.plain_jpeg(), 0.3))
    (root / "dog" / "notes.jpg").write_text("shopping list, not a photo")
    return str(root)


@pytest.mark.slow
@pytest.mark.parametrize("legacy", [False, True], ids=["pixels", "legacy_export"])
def test_batch_job_predicts_good_images_and_dead_letters_bad_ones(model_dir, legacy_model_dir,
                                                                  legacy, tmp_path, capsys):
    source = _batch_folder(tmp_path / "photos")
    output = tmp_path / "predictions"
    model = legacy_model_dir if legacy else model_dir

    manifest = batch_predict.run([f"--model={model}", f"--source=folder:{source}",
                                  f"--output={output}", "--top_k=2", "--no_progress"])

    assert (output / "_SUCCESS").exists()
    assert manifest == json.loads((output / "manifest.json").read_text())
    assert (manifest["inputs"], manifest["predicted"], manifest["rejected"]) == (5, 3, 2)
    assert manifest["labels"] == sorted(fx.CLASSES)
    letters = [json.loads(line) for f in (output / "dead_letters").iterdir()
               for line in f.read_text().splitlines()]
    assert sorted((os.path.basename(d["uri"]), d["reason"]) for d in letters) == [
        ("cut.jpg", "truncated"), ("notes.jpg", "not_an_image")]
    parquet = sorted((row for path in output.glob("predictions-*.parquet")
                      for row in pq.read_table(path).to_pylist()), key=lambda row: row["uri"])
    csv_rows = sorted(_read_csv(output), key=lambda row: row["uri"])
    assert [row["uri"] for row in parquet] == [row["uri"] for row in csv_rows] == sorted(
        os.path.join(source, label, name) for label, name in
        (("cat", "random.png"), ("cat", "photo.jpg"), ("dog", "copy.tiff")))
    for row, line in zip(parquet, csv_rows):
        assert row["top_k_labels"] == json.loads(line["top_k_labels"])
        assert row["label"] == line["label"] == row["top_k_labels"][0]
        np.testing.assert_allclose(row["top_k_probabilities"],
                                   json.loads(line["top_k_probabilities"]), rtol=1e-6)
    single = predict.run([f"--model={model}", "--top_k=2", *[row["uri"] for row in parquet]])
    for row in parquet:  # the batch job and the single-file form agree
        assert row["top_k_labels"] == [label for label, _ in single[row["uri"]]]
        np.testing.assert_allclose(row["top_k_probabilities"],
                                   [p for _, p in single[row["uri"]]], atol=1e-6)
    out = capsys.readouterr().out
    assert "5 inputs: 3 predicted, 2 rejected" in out
    # exported without an OOD description (as before issue 23): empty columns, a note
    assert manifest["out_of_distribution"] is None and predict_model.OLD_EXPORT_NOTE in out
    assert all(row["ood_score"] is None and row["in_distribution"] is None for row in parquet)
    assert all(line["ood_score"] == line["in_distribution"] == "" for line in csv_rows)


def _read_csv(output) -> list[dict]:
    import csv

    rows = []
    for path in sorted(output.glob("predictions-*.csv")):
        with open(path, newline="") as f:
            rows.extend(csv.DictReader(f))
    return rows


def test_batch_job_failing_before_its_commit_leaves_nothing_a_reader_takes_as_complete(
        model_dir, tmp_path, monkeypatch):
    source = _batch_folder(tmp_path / "photos")
    output = tmp_path / "predictions"

    def killed(*args, **kwargs):
        raise RuntimeError("killed after the shards, before the commit")

    monkeypatch.setattr(batch_predict, "commit_predictions", killed)
    with pytest.raises(RuntimeError, match="killed"):
        batch_predict.run([f"--model={model_dir}", f"--source=folder:{source}",
                           f"--output={output}", "--no_progress"])

    assert [p.name for p in output.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("args, sentence", [
    (["--source=folder:OUT", "--output=OUT/p", "OUT/a.png"], "not both"),
    (["--source=folder:OUT", "--output=OUT/p", "--top_k=0"], "--top_k must be positive"),
    (["--source=folder:OUT"], "--output"),
    (["--source=folder:OUT", "--output=OUT/p", "--no_such_flag=1"], "Unknown option"),
    (["--source=OUT", "--output=OUT/p"], "KIND:URI"),
    (["--source=folder:OUT", "--output=OUT/done"], "already holds committed predictions"),
    (["--output=OUT/p"], "--source"),
])
def test_bad_batch_flags_exit_2_with_one_sentence(model_dir, tmp_path, capsys, args, sentence):
    os.makedirs(tmp_path / "done")
    (tmp_path / "done" / "_SUCCESS").write_text("")
    args = [f"--model={model_dir}"] + [a.replace("OUT", str(tmp_path)) for a in args]

    assert main(predict.run, args) == 2

    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and sentence in err, err
