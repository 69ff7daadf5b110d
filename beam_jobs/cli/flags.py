"""Flags of every command: argparse that fails with one sentence, `--config` files, Beam's
pipeline options parsed strictly, and the early check that an output folder is writable."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import textwrap
from collections.abc import Iterator, Sequence
from typing import Any

from beam_jobs.cli.config_file import FLAG as CONFIG_FLAG
from beam_jobs.cli.config_file import expand_config
from beam_jobs.cli.errors import UserError

CONFIG_HELP = ("YAML file of option: value pairs (any option of this command); flags typed on "
               "the command line override it")


class UsageParser(argparse.ArgumentParser):
    """argparse, but a bad flag is a `UserError` (one sentence, exit 2), not usage + exit."""

    def error(self, message: str):  # type: ignore[override]
        raise UserError(f"{message[0].upper()}{message[1:]} (see {self.prog} --help).")


def argument_parser(prog: str, description: str, example: str) -> argparse.ArgumentParser:
    """A parser whose --help ends with a worked example and that accepts --config=FILE."""
    parser = UsageParser(prog=prog, description=description, epilog=example,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(CONFIG_FLAG, metavar="FILE", help=CONFIG_HELP)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse flags after expanding --config (flags typed later override the file)."""
    return parser.parse_args(expand_config(sys.argv[1:] if argv is None else argv))


@contextlib.contextmanager
def _argparse_errors_are_user_errors() -> Iterator[None]:
    """Beam parses options with its own parsers; route their errors through UserError too."""
    original = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = UsageParser.error  # type: ignore[assignment, method-assign]
    try:
        yield
    finally:
        argparse.ArgumentParser.error = original  # type: ignore[assignment, method-assign]


def pipeline_help(prog: str, description: str, example: str, option_classes: Sequence[type],
                  beam_note: str) -> str:
    """--help for a Beam job: our options in full, then a pointer to Beam's, then the example."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     epilog=f"{textwrap.fill(beam_note, 78)}\n\n{example}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(CONFIG_FLAG, metavar="FILE", help=CONFIG_HELP)
    for cls in option_classes:
        cls._add_argparse_args(parser)  # type: ignore[attr-defined]
    return parser.format_help()


def parse_pipeline_options(argv: Sequence[str] | None, option_class: type, *, prog: str,
                           description: str, example: str, beam_note: str = "") -> Any:
    """PipelineOptions from flags + --config, strict: an unknown or malformed flag is a
    UserError (Beam alone would only log "Discarding unparseable args")."""
    from apache_beam.options.pipeline_options import PipelineOptions

    args = expand_config(sys.argv[1:] if argv is None else argv)
    if "-h" in args or "--help" in args:
        print(pipeline_help(prog, description, example, [option_class], beam_note))
        raise SystemExit(0)
    options = PipelineOptions(args)
    beam_options_log = logging.getLogger("apache_beam.options.pipeline_options")
    level = beam_options_log.level
    beam_options_log.setLevel(logging.ERROR)  # we report unknown flags ourselves, below
    try:
        with _argparse_errors_are_user_errors():
            known = options.get_all_options(drop_default=False)
            every = options.get_all_options(drop_default=False, retain_unknown_options=True)
            options.view_as(option_class)
    finally:
        beam_options_log.setLevel(level)
    unknown = sorted(set(every) - set(known))
    if unknown:
        raise UserError(f"Unknown option --{unknown[0]} (see {prog} --help).")
    missing = [f"--{name}" for name in getattr(option_class, "REQUIRED", ())
               if getattr(options.view_as(option_class), name) in (None, "")]
    if missing:
        raise UserError(f"The following arguments are required: {', '.join(missing)} "
                        f"(see {prog} --help).")
    return options


def check_writable(folder: str, flag: str) -> None:
    """Fail in the first second, not after the whole job, when the output cannot be written."""
    import uuid

    from apache_beam.io.filesystems import FileSystems

    probe = FileSystems.join(folder, f".tv-write-probe-{uuid.uuid4().hex}")
    try:
        with FileSystems.create(probe) as f:
            f.write(b"")
        FileSystems.delete([probe])
    except Exception as err:
        raise UserError(f"Cannot write to {flag}={folder} ({_first_line(err)}); choose a "
                        f"folder you can write to.") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:160] if text else type(err).__name__
