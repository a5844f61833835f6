"""What travels between the HTTP handlers (asyncio) and the worker thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from tunesmith.serve.errors import APIError
from tunesmith.serve.sampling import RowSampler


@dataclass(frozen=True)
class Started:
    """The job took a row in the running batch (sent just before its first token)."""


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Done:
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    error: APIError


Event = Started | Delta | Done | Failed


@dataclass
class Job:
    """One generation request; the worker reports :data:`Event` s into ``events``."""

    model: str
    prompt_ids: list[int]
    max_tokens: int
    sampler: RowSampler
    stop: list[str]
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    created: float = field(default_factory=time.monotonic)
    stream: bool = True  # False: the reply's text comes once, when it is done

    def emit(self, event: Event) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)


def emit_all(events: list[tuple[Job, Event]]) -> None:
    """Send ``events`` (in order) with one wake-up of each event loop they go to, not one per
    event: the worker hands a whole step's tokens over at once, so a step of B rows costs the
    handlers' loop one turn instead of B (each a thread switch that contends for the GIL)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Job, Event]]] = {}
    for job, event in events:
        by_loop.setdefault(job.loop, []).append((job, event))
    for loop, items in by_loop.items():
        if not loop.is_closed():
            loop.call_soon_threadsafe(_deliver, items)


def _deliver(items: list[tuple[Job, Event]]) -> None:
    for job, event in items:
        job.events.put_nowait(event)


@dataclass
class Control:
    """A change to the model (add/remove an adapter), run by the worker when no row decodes."""

    fn: Callable[[], Any]
    result: Future[Any] = field(default_factory=Future)

    def run(self) -> None:
        try:
            self.result.set_result(self.fn())
        except BaseException as e:  # handed to the awaiting handler
            self.result.set_exception(e)
