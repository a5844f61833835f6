"""Errors the server turns into OpenAI-style JSON bodies with the right HTTP status."""

from __future__ import annotations

import math
from typing import Any

from tunesmith.errors import UserError


class ServeError(UserError):
    """A bad ``tunesmith serve`` command line (adapter spec, root, key file): exit 2 at start."""


class APIError(Exception):
    """One failed request: ``{"error": {"message", "type", "param", "code"}}`` with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers  # extra response headers (``Retry-After`` on a 429)

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def model_not_found(name: str, known: list[str]) -> APIError:
    return APIError(
        404,
        f"The model '{name}' does not exist; served models: {', '.join(known)}",
        param="model",
        code="model_not_found",
    )


def unauthorized() -> APIError:
    return APIError(
        401,
        "Missing or incorrect API key: send 'Authorization: Bearer <key>'",
        type="authentication_error",
        code="invalid_api_key",
    )


def timed_out(seconds: float) -> APIError:
    return APIError(
        504, f"The request did not finish within {seconds:g} s", type="timeout", code="timeout"
    )


def overloaded(reason: str, retry_after: float) -> APIError:
    """A request refused because it could not finish in time: 429 with ``Retry-After``."""
    seconds = max(1, math.ceil(retry_after))
    return APIError(
        429,
        f"The server is overloaded ({reason}); retry after {seconds} s",
        type="rate_limit_error",
        code="queue_full",
        headers={"Retry-After": str(seconds)},
    )


def internal(message: str) -> APIError:
    return APIError(500, message, type="server_error", code="internal_error")
