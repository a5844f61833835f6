"""``serve`` probed as a hostile client would probe it (issue 14, part B), against live servers:
client mistakes that used to be 500s, disconnected clients, overload, and the limits.

Servers with special settings are built here on the tiny llama; their model is slowed and
instrumented where a test needs decoding to take a known time (``_Slow``). Every request goes
to 127.0.0.1 and every loop is bounded.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.serve.lora_util import KEY, Served

COMPLETION = {"model": "tiny", "prompt": "Hello", "max_tokens": 2, "temperature": 0}


# ---------------------------------------------------------------------------------- helpers


def _http(
    url: str,
    method: str,
    path: str,
    body: bytes = b"",
    auth: bytes | None = b"Bearer " + KEY.encode(),
) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP/1.1 exchange (any header bytes, unlike http.client): status, headers, body."""
    host, port = url.removeprefix("http://").split(":")
    head = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    head += [b"Content-Type: application/json", f"Content-Length: {len(body)}".encode()]
    if auth is not None:
        head.append(b"Authorization: " + auth)
    with socket.create_connection((host, int(port)), timeout=60) as conn:
        conn.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    top, _, payload = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return int(lines[0].split()[1]), headers, payload


def _post(url: str, path: str, body: dict[str, Any] | bytes, **kw: Any) -> tuple[int, dict]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, headers, payload = _http(url, "POST", path, raw, **kw)
    assert headers["content-type"] == "application/json", (status, payload[:200])
    return status, json.loads(payload)


def _error(url: str, path: str, body: dict[str, Any] | bytes, **kw: Any) -> tuple[int, dict]:
    status, data = _post(url, path, body, **kw)
    err = data["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"], data
    return status, err


class _Slow:
    """Wraps a live server's model: each forward sleeps ``delay`` s and is recorded (its rows),
    and end-of-sequence is ignored, so a request decodes exactly ``max_tokens`` steps."""

    def __init__(self, server: Any, delay: float) -> None:
        self.rows: list[int] = []
        forward = server.host.forward

        def slow(models: list[str], **inputs: Any) -> Any:
            self.rows.append(len(models))
            time.sleep(delay)
            return forward(models, **inputs)

        server.host.forward = slow
        server.batcher.eos = set()


@contextmanager
def _server(tiny_llama: Path, **settings: Any) -> Iterator[tuple[str, Any]]:
    from tunesmith.serve.server import ServerThread, build
    from tunesmith.serve.settings import Batching, Limits, ServeSettings

    limits = Limits(**settings.pop("limits", {}))
    batching = Batching(**settings.pop("batching", {}))
    conf = ServeSettings(
        base=str(tiny_llama), base_name="tiny", api_key=KEY, device="cpu", limits=limits,
        batching=batching, **settings,
    )  # fmt: skip
    server = build(conf)
    with ServerThread(server) as thread:
        yield thread.url, server


def _wait_for(check: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return bool(check())


@pytest.fixture(scope="module")
def roomy(tiny_llama: Path, adapter_root: Path) -> Iterator[str]:
    """A server with the default 1 MB body limit (the shared one allows 20 kB)."""
    with _server(tiny_llama, adapter_root=adapter_root) as (url, _):
        yield url


# ---------------------------------------------------------------------- 500s that are now 400s


def test_non_ascii_authorization_is_a_json_401_and_a_non_ascii_key_works(
    served: Served, tiny_llama: Path
) -> None:
    body = json.dumps(COMPLETION).encode()
    for auth in (b"Bearer \xe9t\xe9", b"\xff\xfe", b"Bearer " + "ключ".encode()):
        status, err = _error(served.url, "/v1/completions", body, auth=auth)
        assert (status, err["code"]) == (401, "invalid_api_key"), auth
    key = "clé-ключ"  # a key file may hold any UTF-8
    from tunesmith.serve.server import ServerThread, build
    from tunesmith.serve.settings import ServeSettings

    server = build(ServeSettings(base=str(tiny_llama), base_name="tiny", api_key=key, device="cpu"))
    with ServerThread(server) as thread:
        status, data = _post(thread.url, "/v1/completions", body, auth=b"Bearer " + key.encode())
        assert status == 200 and data["choices"], data
        status, err = _error(thread.url, "/v1/completions", body, auth=b"Bearer cl\xe9-")
        assert status == 401


@pytest.mark.parametrize(
    ("seed", "status"), [(2**64, 400), (-(2**63) - 1, 400), (2**63 - 1, 200), (-1, 200)]
)
def test_seed_outside_64_bits_is_a_400(served: Served, seed: int, status: int) -> None:
    got, data = _post(served.url, "/v1/completions", {**COMPLETION, "seed": seed})
    assert got == status, data
    if status == 400:
        assert data["error"]["param"] == "seed"


def test_a_body_of_100000_nested_brackets_is_a_400(roomy: str) -> None:
    status, err = _error(roomy, "/v1/chat/completions", b"[" * 100_000)
    assert (status, err["code"]) == (400, "invalid_json")
    assert _post(roomy, "/v1/completions", COMPLETION)[0] == 200  # still serving


def test_an_integer_of_5000_digits_is_a_400(roomy: str) -> None:
    body = b'{"model": "tiny", "prompt": "Hi", "max_tokens": ' + b"9" * 5000 + b"}"
    status, err = _error(roomy, "/v1/completions", body)
    assert (status, err["code"]) == (400, "invalid_json")
    body = b'{"model": "tiny", "prompt": "Hi", "max_tokens": ' + b"9" * 4000 + b"}"
    status, err = _error(roomy, "/v1/completions", body)  # parses: then over the cap
    assert (status, err["code"]) == (400, "max_tokens_exceeded")


def test_a_nul_byte_in_an_adapter_path_is_a_400(served: Served) -> None:
    status, err = _error(served.url, "/v1/adapters", {"name": "nul", "path": "alpha\x00/x"})
    assert (status, err["param"]) == (400, "path")


# ---------------------------------------------------------------------------------- disconnects


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_disconnects_frees_its_row(tiny_llama: Path, stream: bool) -> None:
    with _server(tiny_llama, limits={"max_new_tokens": 300}) as (url, server):
        slow = _Slow(server, 0.01)
        body = json.dumps({**COMPLETION, "max_tokens": 300, "stream": stream}).encode()
        host, port = url.removeprefix("http://").split(":")
        conn = socket.create_connection((host, int(port)), timeout=30)
        conn.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
            + KEY.encode()
            + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        assert _wait_for(lambda: len(slow.rows) >= 3, 10)  # decoding has started
        conn.close()
        assert _wait_for(lambda: server.metrics.in_flight == 0, 2)  # 300 steps take > 3 s
        assert len(slow.rows) < 150, len(slow.rows)
        assert _post(url, "/v1/completions", COMPLETION)[0] == 200


# ---------------------------------------------------------------------------------- overload


def test_a_burst_is_refused_with_429_and_retry_after_never_504(tiny_llama: Path) -> None:
    """16 at once, 2 rows a batch, each batch 0.4 s, 1.8 s to finish: about 4 batches fit."""
    limits = {"request_timeout_s": 1.8, "max_new_tokens": 7}
    with _server(tiny_llama, limits=limits, batching={"max_batch_size": 2}) as (url, server):
        assert server.batcher.max_queue == 8  # the default: 4 x max_batch_size
        slow = _Slow(server, 0.05)
        results: list[tuple[int, dict[str, str], float]] = []
        start = threading.Barrier(16)

        def client() -> None:
            start.wait()
            t0 = time.monotonic()
            body = json.dumps({**COMPLETION, "max_tokens": 7}).encode()
            status, headers, _ = _http(url, "POST", "/v1/completions", body)
            results.append((status, headers, time.monotonic() - t0))

        threads = [threading.Thread(target=client) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    statuses = sorted(s for s, _, _ in results)
    assert len(results) == 16 and set(statuses) <= {200, 429}, statuses
    refused = [(h, took) for s, h, took in results if s == 429]
    assert statuses.count(200) >= 2 and len(refused) >= 6, statuses  # over the queue bound
    assert all(int(h["retry-after"]) >= 1 for h, _ in refused)
    assert min(took for _, took in refused) < 0.5  # refused at once, not after the timeout
    assert max(slow.rows) <= 2  # the concurrency bound: rows per forward


def test_a_request_arriving_while_others_decode_joins_the_running_batch(
    tiny_llama: Path,
) -> None:
    """A decodes 60 tokens; its 5th forward waits until B has been submitted (no timing
    luck). B then joins the running batch: forwards of 2 rows while A goes on, and A decodes
    alone again after B's 3 tokens, long before A's batch would have ended."""
    with _server(tiny_llama, limits={"max_new_tokens": 60}) as (url, server):
        slow = _Slow(server, 0.0)
        held, submit = server.host.forward, server.batcher.submit
        gate: dict[str, bool] = {"timed_out": False}
        submitted: list[Any] = []

        def counted(job: Any) -> None:
            submit(job)
            submitted.append(job)

        def gated(models: list[str], **inputs: Any) -> Any:
            if len(slow.rows) == 4:  # A's prefill and 3 decode steps are done (or B's prefill)
                gate["timed_out"] = not _wait_for(lambda: len(submitted) == 2, 30)
            return held(models, **inputs)

        server.host.forward, server.batcher.submit = gated, counted
        results: dict[str, Any] = {}

        def client(name: str, tokens: int) -> None:
            results[name] = _post(url, "/v1/completions", {**COMPLETION, "max_tokens": tokens})

        a = threading.Thread(target=client, args=("a", 60))
        a.start()
        assert _wait_for(lambda: len(slow.rows) >= 4, 30)
        client("b", 3)
        a.join(timeout=60)
    assert not gate["timed_out"]
    assert results["a"][0] == 200 and results["b"][0] == 200
    assert results["a"][1]["usage"]["completion_tokens"] == 60
    assert results["b"][1]["usage"]["completion_tokens"] == 3
    rows = slow.rows
    joint = [k for k, n in enumerate(rows) if n == 2]
    # B: its prefill (1 row), then 2 decode forwards shared with A (its 2nd and 3rd tokens).
    assert len(joint) == 2 and joint[1] == joint[0] + 1, rows
    assert rows[joint[0] - 1] == 1 and rows[joint[1] + 1 :] == [1] * (len(rows) - joint[1] - 1)
    assert len(rows) - joint[1] - 1 > 40  # A went on alone: the batch did not wait for it


# ---------------------------------------------------------------------------------- limits


def test_body_bound_is_a_413(served: Served) -> None:
    big = {**COMPLETION, "prompt": "x" * 30_000}  # the test server allows 20 kB
    status, err = _error(served.url, "/v1/completions", big)
    assert (status, err["code"]) == (413, "body_too_large")


def test_max_tokens_and_prompt_caps_are_400s(served: Served) -> None:
    from tests.serve.lora_util import MAX_NEW

    status, err = _error(served.url, "/v1/completions", {**COMPLETION, "max_tokens": MAX_NEW + 1})
    assert (status, err["code"]) == (400, "max_tokens_exceeded")
    status, err = _error(served.url, "/v1/completions", {**COMPLETION, "prompt": "word " * 300})
    assert (status, err["code"]) == (400, "context_length_exceeded")


def test_a_request_over_its_timeout_is_a_504_and_frees_its_row(tiny_llama: Path) -> None:
    limits = {"request_timeout_s": 0.5, "max_new_tokens": 200}
    with _server(tiny_llama, limits=limits) as (url, server):
        slow = _Slow(server, 0.01)
        status, err = _error(url, "/v1/completions", {**COMPLETION, "max_tokens": 200})
        assert (status, err["code"]) == (504, "timeout")
        assert _wait_for(lambda: server.metrics.in_flight == 0, 2)
        assert len(slow.rows) < 150, len(slow.rows)


def test_key_comparison_is_constant_time_on_bytes_and_never_raises() -> None:
    from tunesmith.serve.app import key_matches

    assert key_matches("Bearer s3cret", "s3cret") and key_matches("bearer  s3cret ", "s3cret")
    assert key_matches("Bearer " + "clé".encode().decode("latin-1"), "clé")  # as sent in UTF-8
    for header in ("Bearer s3cre", "Basic s3cret", "", "Bearer \udcff", "Bearer é\x00", "\u20ac"):
        assert not key_matches(header, "s3cret"), header


def test_binds_loopback_by_default_and_refuses_other_hosts_without_a_key(
    tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    import tunesmith.serve.server as server_mod
    from tunesmith.cli import main

    bound: list[str] = []

    class _Host:
        def models(self) -> list[str]:
            return ["tiny"]

    class _Built:
        host = _Host()

    monkeypatch.setattr(server_mod, "build", lambda settings: _Built())
    monkeypatch.setattr(server_mod, "serve_forever", lambda srv, host, port: bound.append(host))
    base = ["serve", "--base", str(tiny_llama)]
    assert main(base) == 0 and bound == ["127.0.0.1"]
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.org"):
        assert main([*base, "--host", host]) == 2, host
        assert "needs an API key" in capsys.readouterr().err
    key = tmp_path / "key"
    key.write_text("s3cret\n")
    assert main([*base, "--host", "0.0.0.0", "--api-key-file", str(key)]) == 0
    assert bound == ["127.0.0.1", "0.0.0.0"]
