"""Starting the server: in the foreground (the CLI) or in a thread (tests, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from tunesmith.serve.app import Server, create_app
from tunesmith.serve.host import ModelHost
from tunesmith.serve.settings import ServeSettings


def build(settings: ServeSettings) -> Server:
    return Server(settings, ModelHost(settings))


def _config(server: Server, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(server),
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=5,
    )


def serve_forever(server: Server, host: str, port: int, log_level: str = "info") -> None:
    uvicorn.Server(_config(server, host, port, log_level)).run()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServerThread:
    """A real uvicorn server on a loopback port in a daemon thread; ``with`` starts and stops it."""

    def __init__(self, server: Server, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host, self.port = host, port or free_port(host)
        self._uvicorn = uvicorn.Server(_config(server, self.host, self.port, "warning"))
        self._thread = threading.Thread(target=self._uvicorn.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._uvicorn.should_exit = True
        self._thread.join(timeout=30)
