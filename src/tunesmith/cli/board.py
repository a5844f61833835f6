"""``tunesmith board``: a local web app over a folder of runs (runs, one run, compare, guide)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tunesmith.errors import UserError

TOKEN_ENV = "TUNESMITH_BOARD_TOKEN"


class BoardError(UserError):
    """A board setting that cannot work (an open bind without a token, a missing folder)."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("board", help="a local web app to watch, compare and launch runs")
    p.add_argument("--runs", default="runs", help="the folder of run directories (default: runs)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="bind address (default: loopback only); any other needs --token",
    )
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    p.add_argument(
        "--token",
        default=None,
        help=f"require this token (Bearer header or ?token=); default: ${TOKEN_ENV}",
    )
    p.set_defaults(func=cmd_board)


def guide_dir() -> Path | None:
    """``docs/guide`` of the checkout this package runs from, else None (an installed wheel)."""
    candidate = Path(__file__).resolve().parents[3] / "docs" / "guide"
    return candidate if candidate.is_dir() else None


def board_settings(args: argparse.Namespace) -> tuple[Path, str | None]:
    """The runs folder and token, checked: a non-loopback bind without a token is refused."""
    from tunesmith.cli.serve import is_loopback

    token = args.token or os.environ.get(TOKEN_ENV) or None
    if not is_loopback(args.host) and not token:
        raise BoardError(
            f"--host {args.host} is not a loopback address: anyone who can reach it could read "
            f"your runs; pass --token T (or set {TOKEN_ENV}), or bind 127.0.0.1"
        )
    runs = Path(args.runs)
    if not runs.is_dir():
        raise BoardError(f"--runs {args.runs}: no such folder")
    return runs, token


def cmd_board(args: argparse.Namespace) -> int:
    """Serve the board until interrupted."""
    runs, token = board_settings(args)
    from tunesmith.board.context import BoardContext
    from tunesmith.board.server import serve_board

    ctx = BoardContext(runs_dir=runs, token=token, guide_dir=guide_dir())
    shown = f"http://{args.host}:{args.port}/" + (f"?token={token}" if token else "")
    print(f"tunesmith board: {runs} at {shown}")
    serve_board(ctx, args.host, args.port)
    return 0
