"""``/v1/chat/completions`` and ``/v1/completions``: validate, queue, await tokens, reply.

A client that disconnects frees its row: a streaming one when the response stops (Starlette
cancels the stream), any other while it waits, by a watcher on the connection's receive channel.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from tunesmith.serve import responses
from tunesmith.serve.batching import Batcher
from tunesmith.serve.errors import APIError, bad_request, model_not_found, timed_out
from tunesmith.serve.host import ModelHost
from tunesmith.serve.jobs import Delta, Done, Event, Failed, Job
from tunesmith.serve.prometheus import Metrics
from tunesmith.serve.protocol import GenRequest
from tunesmith.serve.sampling import RowSampler
from tunesmith.serve.settings import Limits


@dataclass
class Generator:
    host: ModelHost
    batcher: Batcher
    metrics: Metrics
    limits: Limits

    def job(self, req: GenRequest) -> Job:
        """The batcher job for ``req`` (model known, limits checked, prompt encoded); the
        playground submits these too, so its replies come from the same path as serve's."""
        if not self.host.has(req.model):
            raise model_not_found(req.model, self.host.models())
        max_tokens = req.max_tokens or self.limits.default_max_tokens
        if max_tokens > self.limits.max_new_tokens:
            raise bad_request(
                f"max_tokens={max_tokens} is over this server's limit of "
                f"{self.limits.max_new_tokens}",
                param="max_tokens",
                code="max_tokens_exceeded",
            )
        ids = self.host.encode(req.model, req.messages, req.prompt)
        field = "messages" if req.kind == "chat" else "prompt"
        if len(ids) > self.limits.max_prompt_tokens:
            raise bad_request(
                f"The prompt has {len(ids)} tokens; this server's limit is "
                f"{self.limits.max_prompt_tokens}",
                param=field,
                code="context_length_exceeded",
            )
        if not ids:
            raise bad_request("The prompt is empty", param=field)
        sampler = RowSampler(req.temperature, req.top_p, req.top_k, req.seed)
        loop = asyncio.get_running_loop()
        return Job(req.model, ids, max_tokens, sampler, req.stop, loop, stream=req.stream)

    async def _next(self, job: Job, deadline: float) -> Event:
        """The job's next event; a failure or the deadline raises (and cancels the job)."""
        try:
            event = await asyncio.wait_for(job.events.get(), deadline - time.monotonic())
        except TimeoutError:
            job.cancelled.set()
            raise timed_out(self.limits.request_timeout_s) from None
        if isinstance(event, Failed):
            job.cancelled.set()
            raise event.error
        return event

    async def __call__(
        self, request: Request, body: Awaitable[bytes], parse: Callable[[bytes], GenRequest]
    ) -> JSONResponse | StreamingResponse:
        """Read and ``parse`` the body, queue the job (it joins the running batch at the
        worker's next step), answer."""
        req = parse(await body)
        job = self.job(req)
        self.batcher.submit(job)
        deadline = job.created + self.limits.request_timeout_s
        watcher = asyncio.ensure_future(_cancel_on_disconnect(request, job))
        try:
            await self._next(job, deadline)  # Started: the model and the request are good
            if req.stream:
                return StreamingResponse(
                    self._stream(req, job, deadline), media_type="text/event-stream"
                )
            return await self._full(req, job, deadline)
        finally:
            watcher.cancel()
            if not req.stream:
                job.cancelled.set()  # finished, failed or abandoned: the row is free

    async def _full(self, req: GenRequest, job: Job, deadline: float) -> JSONResponse:
        parts = []
        while not isinstance(event := await self._next(job, deadline), Done):
            if isinstance(event, Delta):
                parts.append(event.text)
        self._finished(job, event)
        body = responses.full(
            req.kind, responses.new_id(req.kind), req.model, "".join(parts), event
        )
        return JSONResponse(body)

    def _finished(self, job: Job, done: Done) -> None:
        self.metrics.tokens(done.prompt_tokens, done.completion_tokens)
        self.metrics.latency(time.monotonic() - job.created)

    async def _stream(self, req: GenRequest, job: Job, deadline: float) -> AsyncIterator[str]:
        rid = responses.new_id(req.kind)
        try:
            yield responses.chunk(req.kind, rid, req.model, "", first=True)
            while not isinstance(event := await self._next(job, deadline), Done):
                if isinstance(event, Delta):
                    yield responses.chunk(req.kind, rid, req.model, event.text)
            self._finished(job, event)
            yield responses.chunk(req.kind, rid, req.model, None, event.finish_reason)
            if req.include_usage:
                yield responses.usage_chunk(req.kind, rid, req.model, event)
        except APIError as e:  # headers are sent: report in the stream
            yield responses.error_event(e.body())
        finally:
            job.cancelled.set()  # a client that went away frees its row
        yield responses.DONE_EVENT


async def _cancel_on_disconnect(request: Request, job: Job) -> None:
    """Cancel ``job`` when the client goes away. The body is read by now, so the next message
    on the receive channel is ``http.disconnect``."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    job.cancelled.set()
    # The handler stops waiting too; nobody reads the answer (499: nginx's "client closed").
    gone = APIError(499, "The client closed the connection", code="client_closed")
    job.events.put_nowait(Failed(gone))
