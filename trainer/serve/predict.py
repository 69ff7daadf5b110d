"""`tv-predict`: classify images with an exported model, one file at a time or as a Beam job.

    tv-predict --model=MODEL_DIR IMAGE... [--top_k=5]
    tv-predict --model=MODEL_DIR --source=KIND:URI --output=DIR [--top_k=5] [Beam options]

Images are decoded by the extract job's own Pillow path and fed to the export as pixels
(`beam_jobs.predict.model`), so whatever extraction reads predicts from the very pixels training
saw.  The model is loaded with plain `tf.saved_model.load`, as any client would, so this
command is also the smoke test of an export.  The batch form is `beam_jobs.predict.pipeline`.
An image whose `ood_score` is above the export's threshold is marked UNLIKE on its first line:
its probabilities say which class it resembles most, not that it is one.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from beam_jobs.cli import flags
from beam_jobs.cli.config_file import expand_config
from beam_jobs.cli.errors import UserError
from beam_jobs.images.decode import DecodeError

EXAMPLE = """example:
  tv-predict --model=/tmp/model --top_k=3 shirt.png boot.jpg
  tv-predict --model=/tmp/model --source=folder:/data/new --output=/tmp/predictions
  (tv-predict --source=KIND:URI --help lists the batch job's options)"""
BATCH_FLAGS = ("--source", "--output")
CHUNK = 64  # images per call of the model
UNLIKE = "(unlike the training data)"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = flags.argument_parser("tv-predict", __doc__.split("\n")[0], EXAMPLE)
    parser.add_argument("--model", required=True, help="a tv-train --model_dir (holding serving/)")
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image files to classify")
    parser.add_argument("--top_k", type=int, default=5)
    parser.add_argument("--max_pixels", type=int, default=89_478_485,
                        help="images declaring more pixels are refused, as tv-extract does")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks")
    return flags.parse_args(parser, argv)  # also reads --config=FILE.yaml; flags override it


def _flag_given(args: Sequence[str], flag: str) -> bool:
    return any(arg == flag or arg.startswith(flag + "=") for arg in args)


def run(argv: Sequence[str] | None = None):
    """Dispatch: `--source` (or `--output`) means the batch job, otherwise image files."""
    args = expand_config(sys.argv[1:] if argv is None else argv)
    if any(_flag_given(args, flag) for flag in BATCH_FLAGS):
        from beam_jobs.predict import pipeline as batch_predict

        return batch_predict.run(args)
    return classify_files(parse_args(args))


def classify_files(args: argparse.Namespace) -> dict[str, list[tuple[str, float]]]:
    """Print the top-k labels of each file; unreadable files end the command with exit 2
    after the others are printed, in one sentence naming them."""
    from beam_jobs.predict import model as predict_model

    if not args.images:
        raise UserError("Give the IMAGE files to classify, or --source=KIND:URI --output=DIR "
                        "for a batch job (see tv-predict --help).")
    predict_model.check_top_k(args.top_k)
    missing = [path for path in args.images if not _exists(path)]
    if missing:
        raise UserError(f"Image file(s) not found: {', '.join(missing)}.")
    prep = predict_model.read_preprocessing(args.model)
    model = predict_model.LoadedModel(args.model, prep)
    labels = predict_model.read_labels(args.model)
    inputs, failed = {}, {}
    for path in args.images:
        try:
            inputs[path] = predict_model.model_input(_read(path), None, prep, args.max_pixels)
        except DecodeError as err:
            failed[path] = err
        except OSError as err:  # a folder, a permission, a read error
            failed[path] = DecodeError("unreadable", f"{type(err).__name__}: {err}")
    results: dict[str, list[tuple[str, float]]] = {}
    headings: dict[str, str] = {}
    paths = list(inputs)
    for start in range(0, len(paths), CHUNK):
        chunk = paths[start:start + CHUNK]
        scored = model.score([inputs[path] for path in chunk])
        for i, path in enumerate(chunk):
            results[path] = predict_model.top_k(scored.probabilities[i], labels, args.top_k)
            headings[path] = heading(path, scored, i)
    if not model.has_ood and inputs:
        print(predict_model.OLD_EXPORT_NOTE, file=sys.stderr)
    for path in args.images:  # in the order given
        if path in results:
            print(headings[path])
            for label, probability in results[path]:
                print(f"  {label}: {probability:.5f}")
    if failed:
        raise UserError(_unreadable_sentence(failed, len(args.images)))
    return results


def heading(path: str, scored, row: int) -> str:
    """The image's first line: its path, with the UNLIKE mark and its ood_score when it is out
    of distribution (just the path otherwise, and for an export without scores)."""
    if scored.ood_score is None or scored.in_distribution[row]:
        return path
    return f"{path}  {UNLIKE[:-1]}: ood_score {scored.ood_score[row]:.3g})"


def _unreadable_sentence(failed: dict[str, DecodeError], total: int) -> str:
    first, err = next(iter(failed.items()))
    more = f" and {len(failed) - 1} more" if len(failed) > 1 else ""
    return (f"{len(failed)} of {total} images could not be classified: {first} is "
            f"{err.reason.replace('_', ' ')} ({err.detail}){more}.")


def _exists(path: str) -> bool:
    from beam_jobs.runs import read as runs

    return runs.exists(path)


def _read(path: str) -> bytes:
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read()
