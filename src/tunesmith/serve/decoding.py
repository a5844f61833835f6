"""Serve's jobs on the decoding engine: a job is one engine request, its updates its events.

The worker (:mod:`tunesmith.serve.batching`) keeps one :class:`~tunesmith.decoding.Engine` for
the server's life; :func:`decode_batch` runs a fixed list of jobs to the end on a fresh one.
"""

from __future__ import annotations

from typing import Any

import torch

from tunesmith.decoding.engine import Engine, Request, Update
from tunesmith.serve.host import ModelHost
from tunesmith.serve.jobs import Delta, Done, Event, Job, Started, emit_all


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
        stream=job.stream,  # a non-streamed reply is decoded once, at its end
        cancelled=job.cancelled.is_set,
        tag=job,
    )


def events(update: Update) -> tuple[Job, list[Event]]:
    """``update``'s job and what it tells the job: ``Started`` before its first token, each
    new piece of text of a streamed reply, and at the end the whole text of a reply that is
    not streamed, then ``Done``."""
    job: Job = update.row.request.tag
    row = update.row
    out: list[Event] = [Started()] if update.first else []
    if job.stream and update.delta:
        out.append(Delta(update.delta))
    if update.done:
        if not job.stream and row.text:
            out.append(Delta(row.text))
        out.append(Done(row.finish_reason, len(job.prompt_ids), len(row.tokens)))
    return job, out


def report(updates: list[Update]) -> list[Job]:
    """Send every update's events to its job, one hand-over for the lot; return the jobs."""
    pairs = [events(update) for update in updates]
    emit_all([(job, event) for job, evs in pairs for event in evs])
    return [job for job, _ in pairs]


@torch.no_grad()
def decode_batch(host: ModelHost, jobs: list[Job], eos: set[int]) -> int:
    """Generate for every job until each stops (all in one batch); returns the decode steps."""
    engine = new_engine(host, eos, max(1, len(jobs)))
    for job in jobs:
        engine.add(job_request(job))
    while not engine.idle:
        report(engine.step())
    return engine.forwards
