"""The board's FastAPI app: the page routers, the bundled static files, and the token check.

Routers are included in a fixed order: runs pages, guide pages, then the playground and
launch pages; the playground's generation threads stop when the app shuts down. When
``ctx.token`` is set every request must carry it, either as ``Authorization: Bearer T`` or as
``?token=T``; the query form also sets an HttpOnly cookie so the browser's later requests (and
``EventSource``, which cannot send headers) carry it.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tunesmith.board import guide_pages, launch, playground, runs_pages
from tunesmith.board.context import BoardContext

STATIC_DIR = Path(__file__).parent / "static"
COOKIE = "tunesmith_board_token"


def _same(given: str, token: str) -> bool:
    """Constant-time comparison as bytes (any byte in ``given`` is fine)."""
    return hmac.compare_digest(given.encode("utf-8", errors="replace"), token.encode())


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


class TokenGate:
    """ASGI middleware: 401 JSON unless the request carries the board's token.

    Pure ASGI (not ``BaseHTTPMiddleware``) so server-sent event streams pass straight through.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token

    def _from_query(self, scope: Scope) -> str | None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        values = query.get("token")
        return values[0] if values else None

    def _allowed(self, scope: Scope) -> tuple[bool, bool]:
        """(allowed, set the cookie)."""
        scheme, _, bearer = _header(scope, b"authorization").partition(" ")
        if scheme.lower() == "bearer" and _same(bearer.strip(), self.token):
            return True, False
        given = self._from_query(scope)
        if given is not None and _same(given, self.token):
            return True, True
        cookie = SimpleCookie()
        try:
            cookie.load(_header(scope, b"cookie"))
        except Exception:  # a malformed cookie header is just "no token"
            return False, False
        morsel = cookie.get(COOKIE)
        return (morsel is not None and _same(morsel.value, self.token)), False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        allowed, set_cookie = self._allowed(scope)
        if not allowed:
            await _deny(send)
            return
        if not set_cookie:
            await self.app(scope, receive, send)
            return
        value = f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/".encode()

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"set-cookie", value))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


async def _deny(send: Send) -> None:
    body = json.dumps({"detail": "a valid board token is required"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b"Bearer"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(ctx: BoardContext) -> FastAPI:
    """The whole board for ``ctx``: pages, ``/static/*``, and the token gate when set."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        playground.close(ctx)  # the playground's generation threads stop with the board

    app = FastAPI(
        title="tunesmith board", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    for pages in (runs_pages, guide_pages, playground, launch):
        app.include_router(pages.router(ctx))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")

    if ctx.token:
        app.add_middleware(TokenGate, token=ctx.token)
    return app
