"""The server end to end through the official openai client: adapters, streaming, batching."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.serve.lora_util import KEY, Served
from tunesmith.data.records import Message
from tunesmith.data.templates import encode_prompt

PROMPTS = ("Hello there", "What is the capital of France? Answer briefly please.")


def _reference(base: Path, adapter: Path | None, prompt: str, max_new: int) -> str:
    """Greedy reply by plain transformers ``generate`` (+ peft), one prompt at a time."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunesmith.models.load import load_tokenizer

    tok = load_tokenizer(base)
    model = AutoModelForCausalLM.from_pretrained(str(base))
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    ids = torch.tensor([encode_prompt([Message(role="user", content=prompt)], tok)])
    with torch.no_grad():
        out = model.eval().generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new,
            do_sample=False,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    return str(tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True))


@pytest.fixture(scope="module")
def expected(served: Served, tiny_llama: Path) -> dict[tuple[str, str], str]:
    adapters = {"tiny": None, "alpha": served.root / "alpha", "beta": served.root / "beta"}
    return {
        (name, p): _reference(tiny_llama, path, p, 8)
        for name, path in adapters.items()
        for p in PROMPTS
    }


def _chat(client: Any, model: str, prompt: str, **kw: Any) -> Any:
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=kw.pop("max_tokens", 8),
        temperature=0,
        **kw,
    )


def test_models_lists_base_and_adapters(client: Any) -> None:
    ids = [m.id for m in client.models.list().data]
    assert ids == ["tiny", "alpha", "beta"]


def test_alternating_adapters_match_reference_and_differ(
    client: Any, expected: dict[tuple[str, str], str]
) -> None:
    prompt = PROMPTS[0]
    for model in ["alpha", "beta", "tiny", "beta", "alpha"]:
        reply = _chat(client, model, prompt)
        assert reply.choices[0].message.content == expected[(model, prompt)]
        assert reply.model == model
        assert reply.usage.completion_tokens <= 8 and reply.usage.prompt_tokens > 0
    outputs = {expected[(m, prompt)] for m in ("tiny", "alpha", "beta")}
    assert len(outputs) == 3, outputs


def test_streaming_yields_the_same_text_in_chunks(
    client: Any, expected: dict[tuple[str, str], str]
) -> None:
    stream = _chat(client, "alpha", PROMPTS[1], stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    usage = chunks.pop()  # asked for: a last chunk with no choices and the token counts
    assert usage.choices == [] and 0 < usage.usage.completion_tokens <= 8
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert "".join(pieces) == expected[("alpha", PROMPTS[1])]
    assert len(pieces) > 1  # token by token, not one blob
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_raw_sse_ends_with_done(served: Served) -> None:
    status, body = _post(
        served,
        "/v1/completions",
        {"model": "beta", "prompt": "The quick", "stream": True, "max_tokens": 4, "temperature": 0},
    )
    events = [line for line in body.decode().split("\n\n") if line]
    assert status == 200 and events[-1] == "data: [DONE]"
    first = json.loads(events[0].removeprefix("data: "))
    assert first["object"] == "text_completion" and first["model"] == "beta"


def test_text_completion(client: Any, served: Served, tiny_llama: Path) -> None:
    reply = client.completions.create(model="tiny", prompt="The quick", max_tokens=6, temperature=0)
    from transformers import AutoModelForCausalLM

    from tunesmith.models.load import load_tokenizer

    tok = load_tokenizer(tiny_llama)
    ids = tok("The quick", return_tensors="pt")["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama)).eval()
    out = model.generate(
        input_ids=ids,
        max_new_tokens=6,
        do_sample=False,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    assert reply.choices[0].text == tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


# ---------------------------------------------------------------------------------- raw HTTP


def _post(
    served: Served, path: str, body: dict | bytes, key: str | None = KEY, method: str = "POST"
) -> tuple[int, bytes]:
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(served.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request(method, path, body=raw if method == "POST" else None, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def _error(served: Served, path: str, body: dict | bytes, **kw: Any) -> tuple[int, dict]:
    status, data = _post(served, path, body, **kw)
    err = json.loads(data)["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return status, err


def test_auth_required_except_health(served: Served) -> None:
    import openai

    bad = openai.OpenAI(base_url=f"{served.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    status, err = _error(served, "/v1/chat/completions", {"model": "tiny"}, key=None)
    assert status == 401 and err["code"] == "invalid_api_key"
    status, body = _post(served, "/health", b"", key=None, method="GET")
    assert status == 200 and json.loads(body)["status"] == "ok"


CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        (b'{"model": "tiny", "messages": [', 400, None, "invalid_json"),
        (b"[1, 2]", 400, None, "invalid_json"),
        ({**CHAT, "model": "nope"}, 404, "model", "model_not_found"),
        ({**CHAT, "max_tokens": 10_000}, 400, "max_tokens", "max_tokens_exceeded"),
        (
            {**CHAT, "messages": [{"role": "user", "content": "word " * 200}]},
            400,
            "messages",
            "context_length_exceeded",
        ),
        ({**CHAT, "messages": []}, 400, "messages", None),
        ({**CHAT, "messages": [{"role": "tool", "content": "x"}]}, 400, "messages.0.role", None),
        ({**CHAT, "temperature": 5}, 400, "temperature", None),
        ({**CHAT, "n": 2}, 400, "n", None),
        ({"messages": CHAT["messages"]}, 400, "model", None),
        (
            {**CHAT, "messages": [{"role": "user", "content": "x" * 30_000}]},
            413,
            None,
            "body_too_large",
        ),
    ],
)
def test_bad_requests_get_openai_errors(
    served: Served, body: dict | bytes, status: int, param: str | None, code: str | None
) -> None:
    got, err = _error(served, "/v1/chat/completions", body)
    assert (got, err["param"], err["code"]) == (status, param, code)
    ok, data = _post(served, "/v1/chat/completions", CHAT)  # still serving
    assert ok == 200 and json.loads(data)["choices"][0]["finish_reason"] in ("stop", "length")


def test_unknown_model_through_client(client: Any) -> None:
    import openai

    with pytest.raises(openai.NotFoundError):
        _chat(client, "gpt-4", "hi")


# ---------------------------------------------------------------------------------- adapters


def test_add_and_remove_adapter_at_runtime(
    served: Served, client: Any, expected: dict[tuple[str, str], str]
) -> None:
    status, data = _post(served, "/v1/adapters", {"name": "gamma", "path": "alpha"})
    assert status == 201, data
    assert "gamma" in [m.id for m in client.models.list().data]
    reply = _chat(client, "gamma", PROMPTS[0])
    assert reply.choices[0].message.content == expected[("alpha", PROMPTS[0])]
    status, _ = _error(served, "/v1/adapters", {"name": "gamma", "path": "beta"})
    assert status == 409
    status, _ = _post(served, "/v1/adapters/gamma", b"", method="DELETE")
    assert status == 200
    assert "gamma" not in [m.id for m in client.models.list().data]
    status, _ = _error(served, "/v1/chat/completions", {**CHAT, "model": "gamma"})
    assert status == 404
    assert (
        _chat(client, "alpha", PROMPTS[0]).choices[0].message.content
        == expected[("alpha", PROMPTS[0])]
    )


def test_adapter_paths_must_stay_under_the_root(served: Served, tiny_gemma: Path) -> None:
    from shutil import copytree

    from tests.serve.lora_util import make_lora

    outside = served.outside / "evil"  # a valid adapter, but outside the root
    if not outside.exists():
        copytree(served.root / "alpha", outside)
    link = served.root / "link"
    if not link.exists():
        link.symlink_to(outside, target_is_directory=True)
    for path in ["../" + served.outside.name + "/evil", str(outside), "link", "alpha/../../x"]:
        status, err = _error(served, "/v1/adapters", {"name": "evil", "path": path})
        assert (status, err["code"]) == (403, "path_outside_root"), path
    status, err = _error(served, "/v1/adapters", {"name": "evil", "path": "missing"})
    assert status == 400
    other = served.root / "other-base"
    if not other.exists():
        make_lora(tiny_gemma, other, seed=4)
    status, err = _error(served, "/v1/adapters", {"name": "other", "path": "other-base"})
    assert (status, err["code"]) == (400, "base_mismatch")
    status, err = _error(served, "/v1/adapters", {"name": "../x", "path": "alpha"})
    assert (status, err["param"]) == (400, "name")
    status, err = _error(served, "/v1/adapters/tiny", b"", method="DELETE")
    assert status == 400


# ---------------------------------------------------------------------------------- load


def test_concurrent_clients_are_batched_and_correct(
    served: Served, expected: dict[tuple[str, str], str]
) -> None:
    import openai

    before = served.server.metrics.snapshot()["batches"]
    failures: list[str] = []
    done = []

    def worker(i: int) -> None:
        c = openai.OpenAI(base_url=f"{served.url}/v1", api_key=KEY, max_retries=0, timeout=120)
        for j in range(5):
            model = ("tiny", "alpha", "beta")[(i + j) % 3]
            prompt = PROMPTS[(i * 5 + j) % 2]
            try:
                text = _chat(c, model, prompt).choices[0].message.content
            except Exception as e:  # reported below
                failures.append(f"{model}: {e!r}")
                continue
            if text != expected[(model, prompt)]:
                failures.append(f"{model} {prompt!r}: {text!r} != {expected[(model, prompt)]!r}")
            done.append(1)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not failures, failures[:5]
    assert len(done) == 80
    snap = served.server.metrics.snapshot()
    assert snap["batches"] > before  # decode forwards
    assert snap["mean_batch_size"] > 1.0  # some requests shared forwards
    status, body = _post(served, "/health", b"", key=None, method="GET")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, body = _post(served, "/metrics", b"", method="GET")
    assert status == 200 and b"tunesmith_request_latency_seconds_count" in body
