"""The Playground page: one prompt to the base and up to three adapters, replies side by side.

It runs on serve's engine, not a copy of it: per base model one :class:`tunesmith.serve.app.Server`
(a :class:`~tunesmith.serve.host.ModelHost` holding the base with every chosen adapter loaded into
one ``PeftModel``, and the :class:`~tunesmith.serve.batching.Batcher` worker thread driving the
decoding engine), built without uvicorn on the first request for that base (in a worker thread,
so the event loop keeps serving) and kept in ``ctx.extra["playground"]``. The replies of one
prompt are one batch of per-row adapters, exactly as ``tunesmith serve`` answers concurrent
requests, so a reply is the text ``serve`` (and ``tunesmith generate``) gives for the same
prompt, settings and seed.

``POST /playground/stream`` answers with server-sent events (read by ``fetch``, as the request
is a POST): ``columns`` (who replies), ``prompt`` (the exact string ``render_prompt`` gives, per
column), ``delta`` (text), ``done`` (finish reason), ``error``, and ``end``. Adapter paths come
from the browser as names relative to the runs folder and go through ``ctx.resolve`` (403 when
they leave it); the base must be one the page offers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from tunesmith.board.context import BoardContext
from tunesmith.board.layout import esc, page

SMOLLM2 = "smollm2-135m-instruct"  # the shipped alias, offered when its conversion is cached
MAX_ADAPTERS = 3
STYLE = (  # the page's own layout: replies side by side, text wrapped as generated
    "#pg-replies{display:flex;gap:1em;align-items:flex-start}.pg-column{flex:1;min-width:0}"
    ".pg-reply,.pg-template{white-space:pre-wrap;overflow-wrap:anywhere}"
    ".pg-template{color:#555;border-left:3px solid #ccc;padding-left:.5em}"
    "#pg-form label{display:block;margin:.3em 0}#pg-prompt{width:100%}"
    ".pg-settings label{display:inline-block!important;margin-right:1em}"
)
SCAN_DEPTH = 3  # run dirs are found this many folders below the runs folder (sweeps nest)


# ----------------------------------------------------------------------------- what is offered


@dataclass(frozen=True)
class RunInfo:
    """A run dir under the runs folder: its path relative to it, base, and whether it holds a
    LoRA adapter in ``final/``."""

    rel: str
    base: str
    adapter: bool


def _run_dirs(root: Path, depth: int = SCAN_DEPTH) -> list[Path]:
    """Folders holding ``config.yaml`` and ``env.json`` (a run), not descending into one."""
    found: list[Path] = []
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return found
    for child in children:
        if (child / "config.yaml").is_file() and (child / "env.json").is_file():
            found.append(child)
        elif depth > 1:
            found += _run_dirs(child, depth - 1)
    return found


def scan_runs(ctx: BoardContext) -> list[RunInfo]:
    """Every run under ``ctx.runs_dir`` with its base model (runs whose config names none are
    left out)."""
    from tunesmith.engine.rundir import saved_setting

    runs = []
    for run in _run_dirs(ctx.runs_dir):
        try:
            base = saved_setting(run, "model.name_or_path")
        except Exception:  # an unreadable config.yaml: not offered
            continue
        if isinstance(base, str) and base:
            adapter = (run / "final" / "adapter_config.json").is_file()
            runs.append(RunInfo(ctx.shown(run), base, adapter))
    return runs


def base_models(ctx: BoardContext, runs: list[RunInfo]) -> list[str]:
    """The bases of the runs, plus the SmolLM2 alias when its conversion is cached."""
    from tunesmith.models.load import cache_dir

    bases = sorted({r.base for r in runs})
    if SMOLLM2 not in bases and (cache_dir() / "models" / SMOLLM2 / "config.json").is_file():
        bases.append(SMOLLM2)
    return bases


# ----------------------------------------------------------------------------- one engine per base


@dataclass
class Engines:
    """``ctx.extra["playground"]``: one serve ``Server`` per base, built on first use."""

    servers: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def server(self, base: str) -> Any:
        """The running server of ``base`` (called in a worker thread: the first call loads)."""
        from tunesmith.serve.server import build
        from tunesmith.serve.settings import ServeSettings

        with self.lock:
            if base not in self.servers:
                server = build(ServeSettings(base=base, base_name="base"))
                server.batcher.start()
                self.servers[base] = server
            return self.servers[base]

    def load_adapter(self, server: Any, name: str, path: Path, root: Path) -> None:
        """Load ``path`` (a run dir under ``root``) as ``name`` on the worker, once."""
        with self.lock:
            if not server.host.has(name):
                server.batcher.control(lambda: server.host.add(name, path, root)).result()

    def close(self) -> None:
        with self.lock:
            for server in self.servers.values():
                server.batcher.stop()
            self.servers.clear()


def engines(ctx: BoardContext) -> Engines:
    found = ctx.extra.get("playground")
    if not isinstance(found, Engines):
        found = ctx.extra["playground"] = Engines()
    return found


def close(ctx: BoardContext) -> None:
    """Stop every playground worker thread (the board's shutdown)."""
    engines(ctx).close()


def adapter_name(rel: str) -> str:
    """A served model name for the run at ``rel`` (serve's name rule: letters, digits, ._:-)."""
    return "run:" + re.sub(r"[^A-Za-z0-9._-]", "_", rel)[-56:]


# ----------------------------------------------------------------------------- a request


class Ask(BaseModel):
    """What the Playground form sends."""

    model_config = ConfigDict(extra="forbid")

    base: str
    adapters: list[str] = Field(default_factory=list, max_length=MAX_ADAPTERS)
    prompt: str = Field(min_length=1)
    system: str | None = None
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(64, ge=1, le=512)
    seed: int | None = Field(0, ge=0, le=2**62)


def _api_error(e: Exception) -> HTTPException:
    """serve's :class:`APIError` (its message names paths relative to the runs folder) as HTTP."""
    from tunesmith.serve.errors import APIError

    if isinstance(e, APIError):
        return HTTPException(status_code=e.status, detail=e.message)
    return HTTPException(status_code=400, detail=f"{type(e).__name__}: {e}")


async def _prepare(ctx: BoardContext, ask: Ask) -> tuple[Any, list[tuple[str, str]]]:
    """The base's server with the asked adapters loaded; (label, served name) per column."""
    if ask.base not in base_models(ctx, scan_runs(ctx)):
        raise HTTPException(status_code=400, detail=f"'{ask.base}' is not a base the board offers")
    paths = [(rel, ctx.resolve(rel)) for rel in dict.fromkeys(ask.adapters)]  # 403 outside
    pool = engines(ctx)
    try:
        server = await asyncio.to_thread(pool.server, ask.base)
        columns = [("base", server.host.base_name)]
        for rel, path in paths:
            name = adapter_name(rel)
            await asyncio.to_thread(pool.load_adapter, server, name, path, ctx.runs_dir)
            columns.append((rel, name))
    except HTTPException:
        raise
    except Exception as e:  # a load refused (no adapter, another base): the reason, not a trace
        raise _api_error(e) from None
    return server, columns


def _jobs(server: Any, ask: Ask, columns: list[tuple[str, str]]) -> list[Any]:
    """One serve job per column (serve's own validation and prompt encoding), queued together so
    they decode as one batch."""
    from tunesmith.data.records import Message
    from tunesmith.serve.protocol import GenRequest

    messages = [Message("system", ask.system)] if ask.system else []
    messages.append(Message("user", ask.prompt))
    jobs: list[Any] = []
    try:
        for _, name in columns:
            req = GenRequest(
                kind="chat", model=name, messages=messages, prompt=None,
                max_tokens=ask.max_tokens, temperature=ask.temperature, top_p=ask.top_p,
                top_k=0, stop=[], stream=True, seed=ask.seed,
            )  # fmt: skip
            jobs.append(server.generate.job(req))  # serve's request -> job, unchanged
            server.batcher.submit(jobs[-1])
    except Exception as e:  # over a limit, or the queue is full (429): nothing decodes
        for job in jobs:
            job.cancelled.set()
        raise _api_error(e) from None
    return jobs


def _rendered(server: Any, name: str, ask: Ask) -> str:
    """The exact prompt string the model ``name`` is given (its own chat template, if any)."""
    from tunesmith.data.records import Message
    from tunesmith.data.templates import render_prompt

    messages = [Message("system", ask.system)] if ask.system else []
    messages.append(Message("user", ask.prompt))
    tokenizer = server.host.prompt_tokenizers.get(name, server.host.tokenizer)
    return render_prompt(messages, tokenizer)


def sse(event: dict[str, Any]) -> str:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"


async def _relay(column: int, job: Any, out: asyncio.Queue[dict[str, Any]], timeout: float) -> None:
    """Forward one job's events to the shared queue as column-tagged dicts."""
    from tunesmith.serve.jobs import Delta, Done, Failed

    deadline = job.created + timeout
    try:
        while True:
            event = await asyncio.wait_for(job.events.get(), deadline - time.monotonic())
            if isinstance(event, Delta):
                await out.put({"type": "delta", "column": column, "text": event.text})
            elif isinstance(event, Done):
                done = {"type": "done", "column": column, "finish_reason": event.finish_reason}
                await out.put({**done, "tokens": event.completion_tokens})
                return
            elif isinstance(event, Failed):
                await out.put({"type": "error", "column": column, "message": event.error.message})
                return
    except TimeoutError:
        await out.put({"type": "error", "column": column, "message": "timed out"})
    finally:
        job.cancelled.set()


async def _stream(
    server: Any, ask: Ask, columns: list[tuple[str, str]], jobs: list[Any]
) -> AsyncIterator[str]:
    yield sse({"type": "columns", "columns": [label for label, _ in columns]})
    for i, (_, name) in enumerate(columns):
        yield sse({"type": "prompt", "column": i, "text": _rendered(server, name, ask)})
    out: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    timeout = server.settings.limits.request_timeout_s
    relays = [asyncio.ensure_future(_relay(i, j, out, timeout)) for i, j in enumerate(jobs)]
    try:
        finished = 0
        while finished < len(jobs):
            event = await out.get()
            finished += event["type"] in ("done", "error")
            yield sse(event)
        yield sse({"type": "end"})
    finally:  # the browser went away: free every row
        for job in jobs:
            job.cancelled.set()
        for relay in relays:
            relay.cancel()
            with contextlib.suppress(BaseException):
                await relay


# ----------------------------------------------------------------------------- the page


def _form(bases: list[str], runs: list[RunInfo]) -> str:
    options = "".join(f'<option value="{esc(b)}">{esc(b)}</option>' for b in bases)
    boxes = "".join(
        f'<label class="pg-adapter" data-base="{esc(r.base)}"><input type="checkbox" '
        f'name="adapter" value="{esc(r.rel)}"> {esc(r.rel)}</label>'
        for r in runs
        if r.adapter
    )
    number = '<label>{0} <input type="number" name="{1}" value="{2}" step="{3}" min="{4}"></label>'
    settings = "".join(
        number.format(*row)
        for row in (
            ("temperature", "temperature", 0, "0.05", 0),
            ("top_p", "top_p", 1, "0.05", "0.05"),
            ("max_tokens", "max_tokens", 64, 1, 1),
            ("seed", "seed", 0, 1, 0),
        )
    )
    none = "" if bases else "<p>No runs with a base model under the runs folder yet.</p>"
    return (
        f"<style>{STYLE}</style>{none}<form id='pg-form'>"
        f"<label>Base model <select name='base' id='pg-base'>{options}"
        f"</select></label><fieldset id='pg-adapters'><legend>Adapters (up to {MAX_ADAPTERS})"
        f"</legend>{boxes or '<span>none</span>'}</fieldset>"
        "<label>System <input type='text' name='system' id='pg-system'></label>"
        "<label>Prompt <textarea name='prompt' id='pg-prompt' rows='3'></textarea></label>"
        f"<div class='pg-settings'>{settings}</div>"
        "<label><input type='checkbox' id='pg-show-template'> show the rendered chat template"
        "</label> <button type='submit' id='pg-send'>Send</button></form>"
        "<p id='pg-error' class='error' role='alert'></p><div id='pg-replies' class='columns'>"
        "</div>"
    )


def router(ctx: BoardContext) -> APIRouter:
    """``GET /playground`` (the page) and ``POST /playground/stream`` (the replies, as SSE)."""
    api = APIRouter()

    @api.get("/playground", response_class=HTMLResponse)
    async def playground_page() -> str:
        runs = await asyncio.to_thread(scan_runs, ctx)
        body = _form(base_models(ctx, runs), runs)
        return page("Playground", body, scripts=("playground.js",))

    @api.post("/playground/stream")
    async def playground_stream(ask: Ask) -> StreamingResponse:
        server, columns = await _prepare(ctx, ask)
        jobs = _jobs(server, ask, columns)
        return StreamingResponse(
            _stream(server, ask, columns, jobs),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return api
