"""Serve's jobs on the decoding engine: a job is one engine request, its updates its events.

The worker (:mod:`tunesmith.serve.batching`) keeps one :class:`~tunesmith.decoding.Engine` for
the server's life; :func:`decode_batch` runs a fixed list of jobs to the end on a fresh one.
"""

from __future__ import annotations

from typing import Any

import torch

from tunesmith.decoding.engine import Engine, Request, Update
from tunesmith.serve.host import ModelHost
from tunesmith.serve.jobs import Delta, Done, Job, Started


def new_engine(host: ModelHost, eos: set[int], slots: int) -> Engine:
    """An engine over ``host``: each row through its job's adapter. ``host.forward`` is looked
    up at each call, so a wrapped forward (instrumentation) takes effect at once."""

    def forward(adapters: list[str | None], **inputs: Any) -> tuple[torch.Tensor, Any]:
        return host.forward([a or host.base_name for a in adapters], **inputs)

    return Engine(forward, host.decode, eos, slots, host.device)


def job_request(job: Job) -> Request:
    """The engine request of ``job``: its prompt, settings, seed, adapter and cancel flag."""
    params = job.sampler.params(job.max_tokens, job.stop)
    return Request(
        job.prompt_ids,
        params,
        seed=job.sampler.seed,
        adapter=job.model,
        stream=True,
        cancelled=job.cancelled.is_set,
        tag=job,
    )


def report(update: Update) -> Job:
    """Send ``update`` to its job (``Started`` before its first token); return the job."""
    job: Job = update.row.request.tag
    row = update.row
    if update.first:
        job.emit(Started())
    if update.delta:
        job.emit(Delta(update.delta))
    if update.done:
        job.emit(Done(row.finish_reason, len(job.prompt_ids), len(row.tokens)))
    return job


@torch.no_grad()
def decode_batch(host: ModelHost, jobs: list[Job], eos: set[int]) -> int:
    """Generate for every job until each stops (all in one batch); returns the decode steps."""
    engine = new_engine(host, eos, max(1, len(jobs)))
    for job in jobs:
        engine.add(job_request(job))
    while not engine.idle:
        for update in engine.step():
            report(update)
    return engine.forwards
