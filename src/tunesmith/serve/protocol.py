"""The OpenAI request bodies the server accepts, parsed into one :class:`GenRequest`.

Unknown fields that OpenAI clients commonly send (``user``, ``stream_options``...) are ignored;
fields with a value the server cannot honour (``n`` > 1, a non-text content part) are a 400
naming the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tunesmith.data.records import Message
from tunesmith.serve.errors import APIError, bad_request

_ROLE_MAP = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    # NaN and infinities are refused as "must be a finite number", not as out of range.
    temperature: float = Field(default=1.0, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    top_k: int = Field(default=0, ge=0)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)  # a 64-bit integer
    n: int = Field(default=1, ge=1, le=1)


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatBody(_Body):
    messages: list[ChatMessageIn] = Field(min_length=1)


class CompletionBody(_Body):
    prompt: str | list[str]


@dataclass(frozen=True)
class GenRequest:
    """One generation request, ready to be tokenized and queued."""

    kind: Literal["chat", "text"]
    model: str
    messages: list[Message] | None
    prompt: str | None
    max_tokens: int | None
    temperature: float
    top_p: float
    top_k: int
    stop: list[str]
    stream: bool
    seed: int | None
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the usage


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except RecursionError:  # thousands of nested [ or {
        raise bad_request("The request body nests too deeply", code="invalid_json") from None
    except ValueError as e:  # bad JSON or UTF-8, or an integer over Python's 4300 digits
        raise bad_request(f"The request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object", code="invalid_json")
    return data


def _validation_error(e: ValidationError) -> APIError:
    first = e.errors()[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    return bad_request(f"Invalid value for '{param}': {first['msg']}", param=param)


def _text_content(content: str | list[dict[str, Any]] | None, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise bad_request(
                "Only text content parts are supported", param=f"messages.{index}.content"
            )
        parts.append(part["text"])
    return "".join(parts)


def _messages(body: ChatBody) -> list[Message]:
    out = []
    for i, m in enumerate(body.messages):
        role = _ROLE_MAP.get(m.role)
        if role is None:
            raise bad_request(
                f"Unsupported role '{m.role}'; use system, developer, user or assistant",
                param=f"messages.{i}.role",
            )
        out.append(Message(role=role, content=_text_content(m.content, i)))  # type: ignore[arg-type]
    return out


def _common(body: _Body) -> dict[str, Any]:
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if any(not s for s in stop) or len(stop) > 4:
        raise bad_request("'stop' takes up to 4 non-empty strings", param="stop")
    return {
        "model": body.model,
        "max_tokens": body.max_completion_tokens or body.max_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "top_k": body.top_k,
        "stop": stop,
        "stream": body.stream,
        "seed": body.seed,
        "include_usage": bool((body.stream_options or {}).get("include_usage")),
    }


def parse_chat(raw: bytes) -> GenRequest:
    try:
        body = ChatBody.model_validate(parse_json(raw))
    except ValidationError as e:
        raise _validation_error(e) from None
    return GenRequest(kind="chat", messages=_messages(body), prompt=None, **_common(body))


def parse_completion(raw: bytes) -> GenRequest:
    try:
        body = CompletionBody.model_validate(parse_json(raw))
    except ValidationError as e:
        raise _validation_error(e) from None
    prompt = body.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise bad_request("Send one prompt per request", param="prompt")
        prompt = prompt[0]
    return GenRequest(kind="text", messages=None, prompt=prompt, **_common(body))


class AdapterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    path: str


def parse_adapter(raw: bytes) -> AdapterBody:
    try:
        return AdapterBody.model_validate(parse_json(raw))
    except ValidationError as e:
        raise _validation_error(e) from None
