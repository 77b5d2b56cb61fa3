"""Pieces every ``datadiet`` subcommand module shares: exit codes, the output function, the config
and ``-p KEY=VALUE`` arguments and the checked config they load.

:mod:`datadiet.cli.main` and the subcommand modules it registers (:mod:`datadiet.cli.igf_cmd`)
import this module; it imports neither.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError

EXIT_OK = 0
EXIT_USAGE = 2  # bad input: the message says what to fix
EXIT_INTERRUPTED = 130


def echo(text: str = "") -> None:
    """Print one result line (the command line's only output channel besides logging)."""
    print(text, flush=True)


def add_config_args(p: argparse.ArgumentParser, *, required: bool) -> None:
    """``--config/-c FILE.yaml`` and ``--set/-s KEY=VALUE ...`` (read with :func:`load_cfg`)."""
    p.add_argument("--config", "-c", metavar="FILE.yaml", required=required,
                   help="run configuration (data, model, training settings; see configs/)")
    p.add_argument("--set", "-s", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set data.max_train=2000 (repeatable)")


def add_param_args(p: argparse.ArgumentParser, help: str) -> None:
    """``--param/-p KEY=VALUE ...``: method parameters (read with :func:`parse_params`)."""
    p.add_argument("--param", "-p", dest="params", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help=help)


def load_cfg(args: argparse.Namespace):
    """The run config named by :func:`add_config_args`' arguments, with overrides applied and checked."""
    from ..config import load_config
    from ..runner import check_config

    cfg = load_config(args.config, args.overrides)
    check_config(cfg)
    return cfg


def out_file(path: str | Path, flag: str = "--out", *, suffix: str = ".json") -> Path:
    """``path`` checked up front as a file to write (not a folder, no file where its folders go)."""
    from ..core.files import check_file_target

    return check_file_target(path, what=flag, suffix=suffix)


def out_dir(path: str | Path, flag: str = "--out") -> Path:
    """``path`` checked up front as a folder to write into (neither it nor a parent is a file)."""
    from ..core.files import check_dir_target

    return check_dir_target(path, what=flag)


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    """``-p KEY=VALUE`` items as a dict (values parsed as YAML)."""
    from ..config import parse_override

    params: dict[str, Any] = {}
    for item in items:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(f"-p {item!r} must look like KEY=VALUE, e.g. -p keep=0.7")
        path, value = parse_override(item)
        if len(path) != 1:
            raise ConfigError(f"-p {item!r}: method parameters are plain names, e.g. -p keep=0.7")
        params[path[0]] = value
    return params
