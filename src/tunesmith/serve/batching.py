"""The worker thread: it owns the model, gathers requests into batches, and runs changes to
the adapters between batches.

A batch starts with the first waiting request and takes every request that arrives within the
batching window (up to ``max_batch_size``), whatever adapter each names: the rows share every
forward pass.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from concurrent.futures import Future
from typing import Any

from tunesmith.serve.errors import internal, model_not_found, overloaded
from tunesmith.serve.host import ModelHost
from tunesmith.serve.jobs import Control, Failed, Job, Started
from tunesmith.serve.prometheus import Metrics
from tunesmith.serve.sampling import eos_ids
from tunesmith.serve.settings import Batching

_STOP = object()


class Batcher:
    def __init__(
        self, host: ModelHost, batching: Batching, metrics: Metrics, max_queue: int
    ) -> None:
        self.host = host
        self.batching = batching
        self.metrics = metrics
        self.max_queue = max_queue
        self.eos = eos_ids(host.tokenizer)
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="tunesmith-serve", daemon=True)

    @property
    def alive(self) -> bool:
        """The worker thread is running (false before start, after stop or a crash)."""
        return self._thread.is_alive()

    # ------------------------------------------------------------------ handler side
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=30)

    def submit(self, job: Job) -> None:
        depth = self._queue.qsize()
        if depth >= self.max_queue:
            raise overloaded(depth)
        self._queue.put(job)
        self.metrics.queue_depth = self._queue.qsize()

    def control(self, fn: Any) -> Future[Any]:
        item = Control(fn)
        self._queue.put(item)
        return item.result

    # ------------------------------------------------------------------ worker side
    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            if isinstance(first, Control):
                first.run()
                continue
            jobs, held = self._collect(first)
            self.metrics.queue_depth = self._queue.qsize()
            self._run_batch(jobs)
            for item in held:
                if item is _STOP:
                    return
                item.run()

    def _collect(self, first: Job) -> tuple[list[Job], list[Any]]:
        """``first`` plus the jobs arriving within the window; controls and stop are held."""
        jobs, held = [first], []
        deadline = time.monotonic() + self.batching.window_ms / 1000
        while len(jobs) < self.batching.max_batch_size:
            left = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Job):
                jobs.append(item)
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
        from tunesmith.serve.decoding import decode_batch

        ready = self._admit(jobs)
        if not ready:
            return
        self.metrics.batch(len(ready))
        self.metrics.in_flight = len(ready)
        try:
            decode_batch(self.host, ready, self.eos)
        except Exception as e:  # keep serving; the rows of this batch get a 500
            traceback.print_exc()
            for job in ready:
                job.emit(Failed(internal(f"generation failed: {type(e).__name__}: {e}")))
        finally:
            self.metrics.in_flight = 0
