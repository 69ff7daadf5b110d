"""The command line: --help with a worked example, exit code 2 + one sentence for what the user
can fix (traceback only with --verbose), --config YAML files that flags override, and no
TensorFlow start-up banner."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from beam_jobs.cli import flags
from beam_jobs.cli import launch as cli
from beam_jobs.cli.errors import UserError
from beam_jobs.extract import pipeline as extract
from beam_jobs.extract.options import ExtractOptions
from trainer.serve import predict
from trainer.train import command as train


@pytest.mark.parametrize("command, example", [
    (extract.run, "tv-extract --source=idx:"),
    (train.run, "tv-train --data="),
    (predict.run, "tv-predict --model="),
])
def test_help_ends_with_a_worked_example(capsys, command, example):
    with pytest.raises(SystemExit) as exit_:
        command(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--config FILE" in out
    assert "example:" in out and example in out.split("example:")[1]


def _one_sentence(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("args, sentence", [
    (["--source=idx:/x", "--output=OUT", "--no_such_flag=1"], "Unknown option --no_such_flag"),
    (["--source=idx:/x", "--output=OUT", "--num_shards=many"], "--num_shards"),
    (["--source=idx:/x", "--output=OUT", "--num_shards=-1"], "--num_shards=-1 must be at least 0"),
    (["--source=idx:/x", "--output=OUT", "--batch_size=0"], "--batch_size=0 must be at least 1"),
    (["--output=OUT"], "--source"),
    (["--source=idx:/x", "--output=OUT", "--backbone=resnet9000"], "Unknown backbone"),
    (["--source=idx:/x", "--output=OUT/file/below", "--backbone=BACKBONE"], "Cannot write"),
    (["--config=OUT/missing.yaml"], "config file"),
])
def test_extract_user_errors_exit_2_with_one_sentence(tmp_path, capsys, tiny_backbone, args,
                                                     sentence):
    (tmp_path / "file").write_text("a file where a folder should be")
    args = [a.replace("OUT", str(tmp_path)).replace("BACKBONE", tiny_backbone) for a in args]
    assert cli.main(extract.run, args) == 2
    assert sentence in _one_sentence(capsys)


@pytest.mark.parametrize("command, args, sentence", [
    (train.run, ["--data=/no/such/runs", "--model_dir=OUT/m"], "does not exist"),
    (train.run, ["--data=OUT", "--model_dir=OUT/m", "--epochs=ten"], "--epochs"),
    (train.run, ["--data=OUT", "--model_dir=OUT/file/m"], "Cannot write to --model_dir"),
    (train.run, ["--data=OUT", "--model_dir=OUT/m", "--head=transformer"], "--head"),
    (predict.run, ["--model=OUT", "OUT/missing.png"], "not found"),
    (predict.run, ["--model=OUT"], "IMAGE"),
])
def test_trainer_user_errors_exit_2_with_one_sentence(tmp_path, capsys, command, args, sentence):
    (tmp_path / "file").write_text("a file where a folder should be")
    args = [a.replace("OUT", str(tmp_path)) for a in args]
    assert cli.main(command, args) == 2
    assert sentence in _one_sentence(capsys)


def test_verbose_keeps_the_traceback(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        cli.main(train.run, ["--data=/no/such/runs", f"--model_dir={tmp_path}", "--verbose"])


def test_config_file_supplies_options_and_flags_override_it(tmp_path):
    config = tmp_path / "extract.yaml"
    config.write_text("source: idx:/data/fashion-mnist\noutput: /tmp/tv\nnum_shards: 8\n"
                      "limit: train=50,test=10\nincremental: true\ndirect_num_workers: 2\n"
                      "experiments: [a, b]\n")
    options = flags.parse_pipeline_options(
        [f"--config={config}", "--num_shards=2"], ExtractOptions, prog="tv-extract",
        description="", example="")
    opts = options.view_as(ExtractOptions)
    assert (opts.source, opts.output, opts.num_shards, opts.limit, opts.incremental) == (
        "idx:/data/fashion-mnist", "/tmp/tv", 2, "train=50,test=10", True)
    all_options = options.get_all_options()
    assert all_options["direct_num_workers"] == 2 and all_options["experiments"] == ["a", "b"]


def test_config_file_works_for_argparse_commands_too(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("data: /runs\nmodel_dir: /model\nepochs: 7\nlearning_rate: 0.01\n")
    args = train.parse_args([f"--config={config}", "--epochs=3"])
    assert (args.data, args.model_dir, args.epochs, args.learning_rate) == (
        "/runs", "/model", 3, 0.01)


@pytest.mark.parametrize("text, sentence", [
    ("- just\n- a list\n", "must hold a mapping"),
    ("source: [unclosed\n", "not valid YAML"),
    ("nested: {a: 1}\n", "plain value"),
])
def test_bad_config_file_is_a_user_error(tmp_path, text, sentence):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(UserError, match=sentence):
        train.parse_args([f"--config={config}"])


def test_console_script_prints_one_sentence_and_no_tensorflow_banner(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from trainer.serve.__main__ import console; "
                               "sys.exit(console())",
         f"--model={tmp_path}", str(tmp_path / "missing.png")],
        capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: Image file(s) not found: {tmp_path / 'missing.png'}."]


def test_startup_noise_filter_keeps_real_errors():
    noise = ("WARNING: All log messages before absl::InitializeLog() is called are written to "
             "STDERR\nI0000 00:00:1795624516.008681   27590 port.cc:153] oneDNN custom "
             "operations are on.\nE0000 00:00:1795624520.487502   27590 cuda_platform.cc:52] "
             "failed call to cuInit: INTERNAL\n")
    real = "E0000 00:00:1795624520.487502   27590 saved_model_loader.cc:9] could not load\n"
    kept = [line for line in (noise + real).splitlines() if not cli._TF_STARTUP_NOISE.search(line)]
    assert kept == [real.strip()]


_BANNER = ("WARNING: All log messages before absl::InitializeLog() is called are written to "
           "STDERR\nI0000 00:00:1795624516.008681   27590 port.cc:153] oneDNN custom "
           "operations are on.\nI0000 00:00:1795624516.008681   27590 cudart_stub.cc:31] Could "
           "not find cuda drivers on your machine, GPU will not be used.\n")


def test_worker_processes_banner_is_filtered_but_their_real_errors_pass(tmp_path):
    """A child process inherits fd 2 like Beam's worker processes do: its banner is dropped,
    its other lines and the parent's own stderr still arrive."""
    child = ("import sys; sys.stderr.write(" + repr(_BANNER + "worker: a real error\n") + ")")
    script = ("import subprocess, sys\n"
              "from beam_jobs.cli.worker_stderr import children_stderr_filtered\n"
              "with children_stderr_filtered():\n"
              f"    subprocess.run([sys.executable, '-c', {child!r}])\n"
              "    print('parent: still a terminal' if sys.stderr.isatty() else 'parent: here',"
              " file=sys.stderr)\n")
    env = {k: v for k, v in os.environ.items() if k != "TV_TF_STARTUP_LOGS"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=120)
    assert sorted(done.stderr.splitlines()) == ["parent: here", "worker: a real error"]
    shown = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           env=dict(env, TV_TF_STARTUP_LOGS="1"), timeout=120)
    assert "port.cc:153] oneDNN" in shown.stderr  # the opt-out shows what was filtered


@pytest.mark.slow
def test_multi_process_extract_shows_no_banner_a_progress_line_and_skipped_files(
        tmp_path, tiny_backbone):
    """The console script as a user runs it, with two worker processes (each imports
    TensorFlow): no banner line at all, progress lines in the log, skipped files named."""
    from tests.helpers.images import write_folder

    root = write_folder(str(tmp_path / "images"), per_class=4, classes=("cat", "dog"))
    for name in ("cat/notes.txt", "dog/notes.txt", "dog/.DS_Store"):
        (tmp_path / "images" / name).write_bytes(b"x")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TF_CPP") and k != "TV_TF_STARTUP_LOGS"}
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from beam_jobs.extract.__main__ import console; "
                               "sys.exit(console())",
         f"--source=folder:{root}", f"--output={tmp_path / 'out'}",
         f"--backbone={tiny_backbone}", "--direct_running_mode=multi_processing",
         "--direct_num_workers=2", "--progress_interval=1"],
        capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    banner = [line for line in done.stderr.splitlines() if cli._TF_STARTUP_NOISE.search(line)
              or "InitializeLog" in line or "semi_persistent" in line]
    assert banner == []
    assert "extract: 8/8 images (100.0%)" in done.stderr.splitlines()[-1]
    assert "; skipped 2 .txt, 1 .DS_Store" in done.stdout
