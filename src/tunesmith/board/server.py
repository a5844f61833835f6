"""Starting the board: in the foreground (``tunesmith board``) or in a thread (tests)."""

from __future__ import annotations

import threading
import time

import uvicorn

from tunesmith.board.app import create_app
from tunesmith.board.context import BoardContext
from tunesmith.serve.server import free_port

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def _config(ctx: BoardContext, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(ctx),
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=2,
    )


def serve_board(ctx: BoardContext, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Serve the board until interrupted (the CLI checks the token rule before calling)."""
    uvicorn.Server(_config(ctx, host, port, "info")).run()


class BoardThread:
    """The board on a free loopback port in a daemon thread; ``with`` starts and stops it."""

    def __init__(self, ctx: BoardContext, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.ctx = ctx
        self.host, self.port = host, port or free_port(host)
        self._uvicorn = uvicorn.Server(_config(ctx, self.host, self.port, "warning"))
        self._thread = threading.Thread(target=self._uvicorn.run, daemon=True)

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:54321``."""
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> BoardThread:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the board did not start on {self.url}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._uvicorn.should_exit = True
        self._thread.join(timeout=30)
