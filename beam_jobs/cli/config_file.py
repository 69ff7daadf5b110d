"""`--config=FILE`: every command-line option of every command can also come from YAML.

The file is a mapping of flag names (with or without the leading dashes, `_` or `-` alike) to
values; it is turned back into flags *before* the ones typed on the command line, so argparse's
last-one-wins rule makes typed flags override the file without any merging logic of ours:

    # extract.yaml
    source: idx:/usr/share/datasets/fashion-mnist
    output: /tmp/tv
    limit: train=5000,test=1000
    direct_num_workers: 2          # Beam's own options work the same way
    experiments: [use_runner_v2]   # a list repeats the flag

    tv-extract --config=extract.yaml --limit=100
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml
from apache_beam.io.filesystems import FileSystems

from beam_jobs.cli.errors import UserError

FLAG = "--config"


def split_config_flag(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """Find `--config=FILE` or `--config FILE`; return the file and the remaining flags."""
    rest: list[str] = []
    path = None
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith(FLAG + "="):
            path = arg.split("=", 1)[1]
        elif arg == FLAG:
            if i + 1 >= len(args):
                raise UserError(f"{FLAG} needs a file name: {FLAG}=FILE.yaml.")
            path = args[i + 1]
            i += 1
        else:
            rest.append(arg)
        i += 1
    return path, rest


def load_config(path: str) -> dict[str, Any]:
    """Read a YAML mapping from any Beam filesystem (local, gs://, …)."""
    if not FileSystems.exists(path):
        raise UserError(f"The config file {path} does not exist.")
    with FileSystems.open(path) as f:
        text = f.read().decode("utf-8")
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserError(f"The config file {path} is not valid YAML{where}.") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UserError(f"The config file {path} must hold a mapping of option: value, "
                        f"not a {type(loaded).__name__}.")
    return loaded


def config_to_flags(config: dict[str, Any]) -> list[str]:
    """`{num_shards: 4, verbose: true, experiments: [a, b]}` → `--num_shards=4 --verbose
    --experiments=a --experiments=b`; `false` and `null` leave the option at its default."""
    flags: list[str] = []
    for key, value in config.items():
        name = "--" + str(key).lstrip("-")
        values = value if isinstance(value, list) else [value]
        for item in values:
            if item is None or item is False:
                continue
            if item is True:
                flags.append(name)
            elif isinstance(item, (dict, list)):
                raise UserError(f"Config option {key!r} must be a plain value or a list of "
                                f"plain values.")
            else:
                flags.append(f"{name}={item}")
    return flags


def expand_config(argv: Sequence[str]) -> list[str]:
    """The flags a command should parse: the config file's first, then the typed ones."""
    path, rest = split_config_flag(argv)
    if path is None:
        return rest
    return config_to_flags(load_config(path)) + rest
