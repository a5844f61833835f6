"""OpenAI response bodies and stream chunks for chat and text completions."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from tunesmith.serve.jobs import Done


def new_id(kind: str) -> str:
    return f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"


def _usage(done: Done) -> dict[str, int]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }


def full(kind: str, rid: str, model: str, text: str, done: Done) -> dict[str, Any]:
    if kind == "chat":
        choice: dict[str, Any] = {"message": {"role": "assistant", "content": text}}
    else:
        choice = {"text": text}
    choice.update(index=0, finish_reason=done.finish_reason, logprobs=None)
    return {
        "id": rid,
        "object": "chat.completion" if kind == "chat" else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": _usage(done),
    }


def chunk(
    kind: str,
    rid: str,
    model: str,
    text: str | None,
    finish_reason: str | None = None,
    first: bool = False,
) -> str:
    """One ``data: {...}`` server-sent event."""
    if kind == "chat":
        delta: dict[str, Any] = {"role": "assistant"} if first else {}
        if text is not None:
            delta["content"] = text
        choice: dict[str, Any] = {"delta": delta}
    else:
        choice = {"text": text or ""}
    choice.update(index=0, finish_reason=finish_reason, logprobs=None)
    body = {
        "id": rid,
        "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
    }
    return f"data: {json.dumps(body)}\n\n"


def usage_chunk(kind: str, rid: str, model: str, done: Done) -> str:
    """The extra last chunk of ``stream_options: {"include_usage": true}``: no choices."""
    body = {
        "id": rid,
        "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [],
        "usage": _usage(done),
    }
    return f"data: {json.dumps(body)}\n\n"


DONE_EVENT = "data: [DONE]\n\n"


def error_event(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body)}\n\n"
