"""Yesterday's ``serve`` worker, kept only as the baseline of ``serve_throughput.py``: batches
formed in a window (``Batching.window_ms``, up to ``max_batch_size`` rows), every request of a
batch waiting for the whole batch to end before the next batch starts. Copied from
``src/tunesmith/serve/{batching,decoding}.py`` as they were before the decoding engine (issue
15); it plugs into a built server in place of its ``Batcher``."""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import torch

from tunesmith.data.completion_batches import left_pad
from tunesmith.serve.errors import internal, model_not_found, overloaded
from tunesmith.serve.host import ModelHost
from tunesmith.serve.jobs import Control, Delta, Done, Failed, Job, Started
from tunesmith.serve.prometheus import Metrics
from tunesmith.serve.sampling import TextStream, eos_ids
from tunesmith.serve.settings import Batching, Limits


class _Row:
    def __init__(self, job: Job, host: ModelHost) -> None:
        self.job = job
        self.stream = TextStream(host.decode, job.stop)
        self.count = 0

    def finish(self, reason: str) -> None:
        tail = self.stream.flush()
        if tail:
            self.job.emit(Delta(tail))
        self.job.emit(Done(reason, len(self.job.prompt_ids), self.count))

    def step(self, token: int, eos: set[int]) -> bool:
        """Take the sampled token; True while the row goes on."""
        self.count += 1
        if token in eos:
            self.finish("stop")
            return False
        delta = self.stream.push(token)
        if delta:
            self.job.emit(Delta(delta))
        if self.stream.stopped:
            self.finish("stop")
            return False
        if self.count >= self.job.max_tokens:
            self.finish("length")
            return False
        return True


def _select(cache: Any, keep: list[int]) -> Any:
    index = torch.tensor(keep, dtype=torch.long)
    cache.batch_select_indices(index)
    return cache


@torch.no_grad()
def decode_batch(host: ModelHost, jobs: list[Job], eos: set[int]) -> int:
    """Generate for every job until each stops; returns the decoding steps run."""
    rows = [_Row(j, host) for j in jobs]
    enc = left_pad([j.prompt_ids for j in jobs], host.tokenizer.pad_token_id)
    mask = enc["attention_mask"].to(host.device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    logits, cache = host.forward(
        [j.model for j in jobs],
        input_ids=enc["input_ids"].to(host.device),
        attention_mask=mask,
        position_ids=pos,
    )
    steps = 0
    while rows:
        logits = logits.cpu()
        keep, tokens = [], []
        for b, row in enumerate(rows):
            if row.job.cancelled.is_set():
                continue
            token = row.job.sampler(logits[b])
            if row.step(token, eos):
                keep.append(b)
                tokens.append(token)
        if not keep:
            break
        if len(keep) < len(rows):
            cache = _select(cache, keep)
            mask, pos = mask[keep], pos[keep]
            rows = [rows[b] for b in keep]
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
        pos = pos[:, -1:] + 1
        logits, cache = host.forward(
            [r.job.model for r in rows],
            input_ids=torch.tensor(tokens, device=host.device)[:, None],
            attention_mask=mask,
            position_ids=pos,
            cache=cache,
        )
        steps += 1
    return steps


_STOP = object()
GATHER_CAP_S = 0.25  # the longest a batch waits past its window for requests being admitted
_GRACE_S = 0.005  # after each arrival: the gap between one handler's submit and the next's start
_EMA = 0.3  # weight of the newest batch in the measured batch time


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

    def shed(self, late: Callable[[int, Job], float | None]) -> list[tuple[Job, float]]:
        """Remove the waiting jobs for which ``late(jobs_ahead, job)`` is not ``None``; return
        each with that value (``jobs_ahead`` counts the jobs kept before it)."""
        with self._ready:
            kept: deque[Any] = deque()
            removed: list[tuple[Job, float]] = []
            ahead = 0
            for item in self._items:
                by = late(ahead, item) if isinstance(item, Job) else None
                if by is not None:
                    removed.append((item, by))
                    continue
                kept.append(item)
                ahead += isinstance(item, Job)
            self._items = kept
            return removed


class WindowedBatcher:
    def __init__(
        self, host: ModelHost, batching: Batching, metrics: Metrics, limits: Limits
    ) -> None:
        self.host = host
        self.batching = batching
        self.metrics = metrics
        self.timeout_s = limits.request_timeout_s
        self.max_queue = (
            limits.max_queue if limits.max_queue is not None else 4 * batching.max_batch_size
        )
        self.eos = eos_ids(host.tokenizer)
        self.batch_seconds: float | None = None  # measured: a moving average of batch time
        # Requests inside a handler but not yet submitted; only the event loop changes it.
        self.arriving = 0
        self._running_since: float | None = None
        self._inbox = _Inbox()
        self._thread = threading.Thread(target=self._run, name="tunesmith-serve", daemon=True)

    @property
    def alive(self) -> bool:
        """The worker thread is running (false before start, after stop or a crash)."""
        return self._thread.is_alive()

    # ------------------------------------------------------------------ handler side
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._inbox.put(_STOP)
        self._thread.join(timeout=30)

    def eta(self, ahead: int) -> float | None:
        """Seconds until a job with ``ahead`` jobs before it would finish, by the measured batch
        time (the running batch's remainder, then one batch per ``max_batch_size`` ahead);
        ``None`` before any batch was timed."""
        per_batch = self.batch_seconds
        if per_batch is None:
            return None
        since = self._running_since
        current = 0.0 if since is None else max(0.0, per_batch - (time.monotonic() - since))
        return current + (ahead // self.batching.max_batch_size + 1) * per_batch

    def _too_late(self, ahead: int, job: Job) -> float | None:
        """How much sooner ``job`` would have to be served to finish in time (``None``: in time,
        or it would join the next batch, which always runs so the measure stays current)."""
        eta = self.eta(ahead)
        if eta is None or ahead < self.batching.max_batch_size:
            return None
        left = job.created + self.timeout_s - time.monotonic()
        return eta - left if eta > left else None

    def submit(self, job: Job) -> None:
        """Queue ``job``, or refuse it (429) when the queue is full or it would time out."""
        waiting = len(self._inbox)
        if waiting >= self.max_queue:
            per_batch = self.batch_seconds or 1.0
            raise overloaded(f"{waiting} requests waiting", per_batch)
        late = self._too_late(waiting, job)
        if late is not None:
            raise overloaded(f"it would not finish within {self.timeout_s:g} s", late)
        self._inbox.put(job)
        self.metrics.queue_depth = len(self._inbox)

    def control(self, fn: Any) -> Future[Any]:
        item = Control(fn)
        self._inbox.put(item)
        return item.result

    # ------------------------------------------------------------------ worker side
    def _run(self) -> None:
        while True:
            first = self._inbox.get(None)
            if first is _STOP:
                return
            if isinstance(first, Control):
                first.run()
                continue
            if first.cancelled.is_set():
                continue
            self._shed_waiting()
            jobs, held = self._collect(first)
            self.metrics.queue_depth = len(self._inbox)
            self._run_batch(jobs)
            for item in held:
                if item is _STOP:
                    return
                item.run()

    def _shed_waiting(self) -> None:
        """Refuse now, rather than time out later, the waiting jobs that cannot finish in time
        (each has the batch now being formed ahead of it, too)."""
        for job, late in self._inbox.shed(lambda ahead, job: self._too_late(ahead + 1, job)):
            job.emit(Failed(overloaded(f"it would not finish within {self.timeout_s:g} s", late)))

    def _collect(self, first: Job) -> tuple[list[Job], list[Any]]:
        """``first`` plus the jobs arriving within the window (longer while requests are being
        admitted, up to :data:`GATHER_CAP_S`); controls and stop are held for after."""
        jobs, held = [first], []
        deadline = time.monotonic() + self.batching.window_ms / 1000
        cap = deadline + GATHER_CAP_S
        while len(jobs) < self.batching.max_batch_size:
            now = time.monotonic()
            gathering = self.arriving > 0 and now < cap
            left = max(deadline - now, min(_GRACE_S, cap - now) if gathering else 0.0)
            item = self._inbox.get(left)
            if item is None:
                if gathering:
                    continue
                break
            if isinstance(item, Job):
                jobs.append(item)
                deadline = max(deadline, min(time.monotonic() + _GRACE_S, cap))
            else:
                held.append(item)
                break
        return jobs, held

    def _admit(self, jobs: list[Job]) -> list[Job]:
        ready = []
        for job in jobs:
            if job.cancelled.is_set():
                continue
            if not self.host.has(job.model):  # removed while the job waited
                job.emit(Failed(model_not_found(job.model, self.host.models())))
                continue
            job.emit(Started())
            ready.append(job)
        return ready

    def _run_batch(self, jobs: list[Job]) -> None:

        ready = self._admit(jobs)
        if not ready:
            return
        self.metrics.batch(len(ready))
        self.metrics.in_flight = len(ready)
        self._running_since = start = time.monotonic()
        try:
            decode_batch(self.host, ready, self.eos)
        except Exception as e:  # keep serving; the rows of this batch get a 500
            traceback.print_exc()
            for job in ready:
                job.emit(Failed(internal(f"generation failed: {type(e).__name__}: {e}")))
        finally:
            self.metrics.in_flight = 0
            self._running_since = None
            took = time.monotonic() - start
            last = self.batch_seconds
            self.batch_seconds = took if last is None else (1 - _EMA) * last + _EMA * took
