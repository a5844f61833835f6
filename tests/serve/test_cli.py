"""``tunesmith serve`` as a user starts it: a subprocess, a key file, a run-time adapter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.helpers.runs import REPO
from tunesmith.serve.server import free_port


def _request(url: str, key: str | None, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_serve_command_end_to_end(tiny_llama: Path, adapter_root: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    port = free_port()
    cmd = [
        sys.executable, "-m", "tunesmith", "serve", "--base", str(tiny_llama),
        "--base-name", "tiny", "--adapter", f"alpha={adapter_root / 'alpha'}",
        "--adapter-root", str(adapter_root), "--api-key-file", str(key_file),
        "--port", str(port), "--max-new-tokens", "8",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                status, health = _request(f"{url}/health", None)
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.2)
        assert status == 200 and "models" not in health  # the names are for key holders
        assert _request(f"{url}/health", "s3cret")[1]["models"] == ["tiny", "alpha"]
        assert _request(f"{url}/v1/models", None)[0] == 401
        status, body = _request(f"{url}/v1/adapters", "s3cret", {"name": "b", "path": "beta"})
        assert status == 201 and body["id"] == "b"
        chat = {"model": "b", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0}
        status, body = _request(f"{url}/v1/chat/completions", "s3cret", chat)
        assert status == 200 and body["usage"]["completion_tokens"] <= 8  # the default is capped
        status, body = _request(f"{url}/v1/chat/completions", "s3cret", {**chat, "max_tokens": 9})
        assert (status, body["error"]["code"]) == (400, "max_tokens_exceeded")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
