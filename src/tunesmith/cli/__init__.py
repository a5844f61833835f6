"""``tunesmith <command>``: one module per command group, each with ``register(sub)``.

A command module is thin: it parses its arguments, loads a config, calls one function. Heavy
libraries (torch, transformers, peft) are imported inside the command functions, so
``tunesmith --help`` and ``tunesmith validate`` start fast and load no training loop.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import tunesmith
from tunesmith.cli import board as board_commands
from tunesmith.cli import compress as compress_commands
from tunesmith.cli import eval as eval_commands
from tunesmith.cli import generate, merge, models, plan, prep, report, score, serve, train
from tunesmith.cli import guide as guide_commands
from tunesmith.cli import lineage as lineage_commands
from tunesmith.cli import probe as probe_commands
from tunesmith.cli import sweep as sweep_commands
from tunesmith.cli.train import recipes_dir

__all__ = ["build_parser", "main", "recipes_dir", "run"]

COMMAND_GROUPS = (
    train, prep, models, generate, eval_commands, merge, score, serve, report, plan,
    compress_commands, probe_commands, sweep_commands, lineage_commands, board_commands,
    guide_commands,
)  # fmt: skip

VERSIONED_PACKAGES = ("torch", "transformers", "peft")


def version_text() -> str:
    """tunesmith's version and the installed versions of the libraries it trains with."""
    from importlib import metadata

    parts = [f"tunesmith {tunesmith.__version__}"]
    for package in VERSIONED_PACKAGES:
        try:
            parts.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{package} (not installed)")
    return ", ".join(parts)


class _VersionAction(argparse.Action):
    """``--version``: the versions are looked up only when asked for (startup stays fast)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunesmith", description=tunesmith.__doc__)
    parser.add_argument(
        "--version", action=_VersionAction, help="tunesmith, torch, transformers, peft versions"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """The errors a user can fix: printed as one line, exit status 2, no traceback."""
    from tunesmith.checks.preflight import PreflightError
    from tunesmith.config import ConfigError
    from tunesmith.data.records import DataError
    from tunesmith.data.templates import ChatTemplateError
    from tunesmith.errors import UserError
    from tunesmith.merge.common import MergeError
    from tunesmith.models.load import ModelError

    return (
        ConfigError,
        FileNotFoundError,
        FileExistsError,
        UserError,
        DataError,
        ModelError,
        ChatTemplateError,
        PreflightError,
        MergeError,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except _user_errors() as e:
        print(f"tunesmith: error: {e}", file=sys.stderr)
        return 2


def run() -> NoReturn:
    """``python -m tunesmith`` / ``python -m tunesmith.cli``: :func:`main`, then exit."""
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Under torchrun, end the process without interpreter finalization: the process group
        # is already destroyed, but gloo work objects still referenced by FSDP/DDP state can be
        # freed during finalization after the C++ side is gone, which intermittently aborts a
        # rank ("terminate called without an active exception") after a run that had succeeded.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
