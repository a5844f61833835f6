"""The FastAPI application: routes, API-key check, body-size limit and OpenAI-style errors."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match

from tunesmith.serve.adapters import check_name, shown, under_root
from tunesmith.serve.batching import Batcher
from tunesmith.serve.embeddings import add_embeddings_route
from tunesmith.serve.errors import APIError, bad_request, internal, model_not_found, unauthorized
from tunesmith.serve.generate import Generator
from tunesmith.serve.host import ModelHost
from tunesmith.serve.prometheus import Metrics
from tunesmith.serve.protocol import parse_adapter, parse_chat, parse_completion
from tunesmith.serve.settings import ServeSettings

OPEN_PATHS = ("/health",)
UNMATCHED = "unmatched"  # the one metrics label of every path no route matches
log = logging.getLogger("tunesmith.serve")


def _error(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    too_big = APIError(
        413, f"The request body is over {limit} bytes", param=None, code="body_too_large"
    )
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


class Server:
    """Everything a request needs: the model host, its worker, metrics and settings."""

    def __init__(self, settings: ServeSettings, host: ModelHost) -> None:
        self.settings = settings
        self.host = host
        self.metrics = Metrics()
        limits = settings.limits
        self.batcher = Batcher(host, settings.batching, self.metrics, limits)
        self.generate = Generator(host, self.batcher, self.metrics, limits)
        # Names being loaded: reserved before the load is queued, so of concurrent adds of one
        # name exactly one wins (the check and the reservation run with no await between them).
        self.loading: set[str] = set()

    def authorized(self, request: Request) -> bool:
        return request.url.path in OPEN_PATHS or self.key_ok(request)

    def key_ok(self, request: Request) -> bool:
        """No key is configured, or the request carries it."""
        key = self.settings.api_key
        if key is None:
            return True
        return key_matches(request.headers.get("authorization", ""), key)

    async def add_adapter(self, raw: bytes) -> dict[str, Any]:
        root = self.settings.adapter_root
        if root is None:
            raise APIError(
                403,
                "Adding adapters at runtime is off: start the server with --adapter-root DIR",
                type="permission_error",
                code="no_adapter_root",
            )
        body = parse_adapter(raw)
        path = under_root(root, body.path)
        check_name(body.name, set(self.host.models()) | self.loading)
        self.loading.add(body.name)
        try:
            weights = await asyncio.wrap_future(
                self.batcher.control(_loader(self.host, body.name, path, root))
            )
        finally:
            self.loading.discard(body.name)
        return {"id": body.name, "object": "model", "path": shown(root, weights)}

    async def remove_adapter(self, name: str) -> dict[str, Any]:
        if name == self.host.base_name:
            raise bad_request("The base model cannot be removed", param="name")
        if name not in self.host.models():
            raise model_not_found(name, self.host.models())
        await asyncio.wrap_future(self.batcher.control(lambda: self.host.remove(name)))
        return {"id": name, "object": "model", "deleted": True}

    def model_list(self) -> dict[str, Any]:
        created = int(time.time())
        rows = [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "tunesmith",
                "parent": None if name == self.host.base_name else self.host.base_name,
            }
            for name in self.host.models()
        ]
        return {"object": "list", "data": rows}


def key_matches(header: str, key: str) -> bool:
    """``header`` is ``Bearer <key>``, compared in constant time as bytes: a header with any
    byte (HTTP headers arrive latin-1 decoded, so this gives back the bytes sent) never raises,
    and a UTF-8 key sent as UTF-8 matches."""
    scheme, _, token = header.partition(" ")
    given = token.strip().encode("latin-1", errors="replace")
    return hmac.compare_digest(given, key.encode()) and scheme.lower() == "bearer"


def _loader(host: ModelHost, name: str, path: Path, root: Path) -> Callable[[], Path]:
    def load() -> Path:
        try:
            return host.add(name, path, root)
        except APIError:
            raise
        except Exception as e:  # a corrupt or incompatible adapter: the server keeps going
            # The exception's text may quote a file or name server paths: logged, not returned.
            log.warning("adapter %r from %s failed to load: %r", name, path, e)
            raise bad_request(
                f"Cannot load adapter '{name}' from '{shown(root, path)}': its files are not a "
                f"LoRA adapter this base can load ({type(e).__name__})",
                param="path",
            ) from None

    return load


def _middleware(server: Server) -> Callable[..., Awaitable[Response]]:
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Any:
        if not server.authorized(request):
            response: Response = _error(unauthorized())
        else:
            try:
                response = await call_next(request)
            except Exception as e:  # never a bare 500 page
                response = _error(internal(f"{type(e).__name__}: {e}"))
        server.metrics.request(route_label(request.app.routes, request.scope), response.status_code)
        return response

    return guard


def route_label(routes: list[BaseRoute], scope: dict[str, Any]) -> str:
    """The template of the route a request matches (``/v1/adapters/{name}``), else ``unmatched``:
    metrics labels stay as few as the routes, whatever paths clients send."""
    for route in routes:
        match, _ = route.matches(scope)
        if match != Match.NONE:
            return str(getattr(route, "path", UNMATCHED))
    return UNMATCHED


def _routes(app: FastAPI, server: Server) -> None:
    limit = server.settings.limits.max_body_bytes

    @app.get("/health", response_model=None)
    async def health(request: Request) -> JSONResponse:
        alive = server.batcher.alive
        body: dict[str, Any] = {"status": "ok" if alive else "worker stopped"}
        if server.key_ok(request):  # the served names are for key holders only
            body["models"] = server.host.models()
        return JSONResponse(body, status_code=200 if alive else 503)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return server.model_list()

    @app.get("/metrics", response_model=None)
    async def metrics(format: str = "prometheus") -> Response | dict[str, Any]:
        if format == "json":
            return server.metrics.snapshot()
        return PlainTextResponse(server.metrics.prometheus())

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Response:
        return await server.generate(request, read_body(request, limit), parse_chat)

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> Response:
        return await server.generate(request, read_body(request, limit), parse_completion)

    @app.post("/v1/adapters", status_code=201)
    async def add_adapter(request: Request) -> dict[str, Any]:
        return await server.add_adapter(await read_body(request, limit))

    @app.delete("/v1/adapters/{name}")
    async def remove_adapter(name: str) -> dict[str, Any]:
        return await server.remove_adapter(name)


def create_app(server: Server) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        server.batcher.start()
        yield
        server.batcher.stop()

    app = FastAPI(title="tunesmith serve", lifespan=lifespan)
    app.middleware("http")(_middleware(server))

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return _error(APIError(exc.status_code, str(exc.detail), type=kind))

    _routes(app, server)
    add_embeddings_route(app, server)
    return app
