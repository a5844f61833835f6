"""The worker thread: it owns the model and the decoding engine, feeds new requests into the
running batch, and runs changes to the adapters when no row is decoding.

Continuous batching: the engine has ``max_batch_size`` slots. Each turn the worker moves every
newly submitted request into the engine's queue and runs one engine step; a free slot takes the
next waiting request, which is prefilled and decodes with the running rows from that step on.
A finished or cancelled row frees its slot at once. A control (add/remove an adapter) stops
new requests from entering; it runs once the running rows have finished.

Admission is sized by what can finish in time. The worker times every request from its first
token to its last; a request that would wait for a slot is refused with 429 and ``Retry-After``
when, by that measure, it would not finish within the request timeout, and so is any waiting
request that falls behind (checked before each step). ``max_queue`` caps the waiting requests
whatever the measure says.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from concurrent.futures import Future
from typing import Any

from tunesmith.serve.errors import internal, model_not_found, overloaded
from tunesmith.serve.host import ModelHost
from tunesmith.serve.jobs import Control, Failed, Job
from tunesmith.serve.prometheus import Metrics
from tunesmith.serve.sampling import eos_ids
from tunesmith.serve.settings import Batching, Limits

_STOP = object()
_EMA = 0.3  # weight of the newest request in the measured time per request


class _Inbox:
    """The FIFO between the handlers and the worker: jobs, controls and the stop mark."""

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._ready = threading.Condition()

    def put(self, item: Any) -> None:
        with self._ready:
            self._items.append(item)
            self._ready.notify()

    def get(self, timeout: float | None) -> Any:
        """The oldest item, or ``None`` when none came within ``timeout`` (``None``: wait)."""
        with self._ready:
            if not self._items and (timeout is None or timeout > 0):
                self._ready.wait_for(lambda: bool(self._items), timeout)
            return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        return len(self._items)


class Batcher:
    def __init__(
        self, host: ModelHost, batching: Batching, metrics: Metrics, limits: Limits
    ) -> None:
        from tunesmith.serve.decoding import new_engine

        self.host = host
        self.batching = batching
        self.metrics = metrics
        self.timeout_s = limits.request_timeout_s
        self.slots = batching.max_batch_size
        self.max_queue = limits.max_queue if limits.max_queue is not None else 4 * self.slots
        self.engine = new_engine(host, eos_ids(host.tokenizer), self.slots)
        self.batch_seconds: float | None = None  # measured: a moving average of request time
        self._started: dict[int, float] = {}  # id(job) -> when its first token came
        self._held: list[Any] = []  # controls (and stop) waiting for the running rows to end
        self._inbox = _Inbox()
        self._thread = threading.Thread(target=self._run, name="tunesmith-serve", daemon=True)

    @property
    def eos(self) -> set[int]:
        return self.engine.eos

    @eos.setter
    def eos(self, ids: set[int]) -> None:
        self.engine.eos = ids

    @property
    def alive(self) -> bool:
        """The worker thread is running (false before start, after stop or a crash)."""
        return self._thread.is_alive()

    def waiting(self) -> int:
        """Requests submitted and not yet decoding."""
        return len(self._inbox) + len(self.engine.waiting)

    # ------------------------------------------------------------------ handler side
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._inbox.put(_STOP)
        self._thread.join(timeout=30)

    def eta(self, ahead: int) -> float | None:
        """Seconds until a job with ``ahead`` waiting jobs before it would finish, by the
        measured time per request: one request's time per ``max_batch_size`` ahead, plus its
        own; ``None`` before any request was timed."""
        per_request = self.batch_seconds
        if per_request is None:
            return None
        return (ahead // self.slots + 1) * per_request

    def _too_late(self, ahead: int, job: Job) -> float | None:
        """How much sooner ``job`` would have to be served to finish in time (``None``: in time,
        or it would take a slot at once, which keeps the measure current)."""
        eta = self.eta(ahead)
        if eta is None or ahead < self.slots:
            return None
        left = job.created + self.timeout_s - time.monotonic()
        return eta - left if eta > left else None

    def submit(self, job: Job) -> None:
        """Queue ``job``, or refuse it (429) when the queue is full or it would time out."""
        waiting = self.waiting()
        if waiting >= self.max_queue:
            raise overloaded(f"{waiting} requests waiting", self.batch_seconds or 1.0)
        late = self._too_late(waiting + len(self.engine.rows), job)
        if late is not None:
            raise overloaded(f"it would not finish within {self.timeout_s:g} s", late)
        self._inbox.put(job)
        self.metrics.queue_depth = self.waiting()

    def control(self, fn: Any) -> Future[Any]:
        item = Control(fn)
        self._inbox.put(item)
        return item.result

    # ------------------------------------------------------------------ worker side
    def _run(self) -> None:
        while True:
            if self.engine.idle and self._held:  # no row decodes: run the held controls
                held, self._held = self._held, []
                for item in held:
                    if item is _STOP:
                        return
                    item.run()
                continue
            self._take(block=self.engine.idle)
            if not self.engine.idle:
                self._shed_waiting()
                self._step()

    def _take(self, block: bool) -> None:
        """Move newly submitted jobs into the engine, until a control or the stop mark (held,
        with everything after it left in the inbox)."""
        timeout: float | None = None if block else 0.0
        while not self._held and (item := self._inbox.get(timeout)) is not None:
            timeout = 0.0
            if isinstance(item, Job):
                self._enqueue(item)
            else:
                self._held.append(item)
        self.metrics.queue_depth = self.waiting()

    def _enqueue(self, job: Job) -> None:
        from tunesmith.serve.decoding import job_request

        if job.cancelled.is_set():
            return
        if not self.host.has(job.model):  # removed while the job waited
            job.emit(Failed(model_not_found(job.model, self.host.models())))
            return
        self.engine.add(job_request(job))

    def _shed_waiting(self) -> None:
        """Refuse now, rather than time out later, the waiting jobs that cannot finish in time
        (those a free slot takes this step are never refused)."""
        free = self.slots - len(self.engine.rows)
        kept = []
        for k, item in enumerate(self.engine.waiting):
            job: Job = item.request.tag
            late = None if k < free else self._too_late(k - free + self.slots, job)
            if late is None:
                kept.append(item)
            else:
                msg = f"it would not finish within {self.timeout_s:g} s"
                job.emit(Failed(overloaded(msg, late)))
        if len(kept) < len(self.engine.waiting):
            self.engine.waiting.clear()
            self.engine.waiting.extend(kept)

    def _step(self) -> None:
        from tunesmith.serve.decoding import report

        forwards = self.engine.forwards
        try:
            updates = self.engine.step()
        except Exception as e:  # keep serving; the rows in the engine get a 500
            traceback.print_exc()
            for request in self.engine.abort():
                error = internal(f"generation failed: {type(e).__name__}: {e}")
                request.tag.emit(Failed(error))
            self.metrics.in_flight = 0
            return
        if self.engine.forwards > forwards:
            self.metrics.batch(self.engine.last_batch)
        now = time.monotonic()
        for update, job in zip(updates, report(updates), strict=True):
            if update.first:
                self._started[id(job)] = now
            if update.done:
                self._timed(now - self._started.pop(id(job), now))
        self.metrics.in_flight = len(self.engine.rows)
        if self.engine.idle:
            self._started.clear()  # cancelled rows leave no update behind

    def _timed(self, took: float) -> None:
        last = self.batch_seconds
        self.batch_seconds = took if last is None else (1 - _EMA) * last + _EMA * took
