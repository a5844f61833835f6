"""``POST /v1/embeddings`` on a live server: the OpenAI client's vectors (base64) and plain
float vectors equal tunesmith's encoder path; bad requests get OpenAI-style errors."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.methods.test_classify import make_tiny_bert
from tunesmith.models.sentence_encoder import (
    Pooling,
    embed_texts,
    load_sentence_encoder,
    write_sentence_transformers_files,
)

TEXTS = ["refund for my parcel", "a longer question about passwords and the login screen"]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = make_tiny_bert(tmp_path_factory.mktemp("enc") / "tiny-encoder", dropout=0.0)
    write_sentence_transformers_files(out, Pooling("mean", True), 32, 24)
    return out


@pytest.fixture(scope="module")
def url(encoder: Path, tiny_llama: Path) -> Iterator[str]:
    from tunesmith.serve.server import ServerThread, build
    from tunesmith.serve.settings import ServeSettings

    settings = ServeSettings(
        base=str(tiny_llama), base_name="tiny", device="cpu", embedders={"faq": encoder}
    )
    with ServerThread(build(settings)) as thread:
        yield thread.url


def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        f"{url}/v1/embeddings",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_openai_client_and_float_vectors_match_the_encoder(url: str, encoder: Path) -> None:
    import openai

    step, tok = load_sentence_encoder(encoder)
    want = embed_texts(step, tok, TEXTS, 24)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)
    got = client.embeddings.create(model="faq", input=TEXTS)  # base64 on the wire
    assert [d.index for d in got.data] == [0, 1]
    assert torch.allclose(torch.tensor([d.embedding for d in got.data]), want, atol=1e-6)
    assert got.usage.prompt_tokens == sum(len(x) for x in tok(TEXTS)["input_ids"])
    status, body = post(url, {"model": "faq", "input": TEXTS[0], "encoding_format": "float"})
    assert status == 200 and body["object"] == "list"
    assert torch.allclose(torch.tensor(body["data"][0]["embedding"]), want[0], atol=1e-6)


def test_bad_requests_get_openai_errors(url: str) -> None:
    status, body = post(url, {"model": "nope", "input": "x"})
    assert status == 404 and body["error"]["param"] == "model" and "faq" in body["error"]["message"]
    status, body = post(url, {"model": "faq", "input": [1, 2]})
    assert status == 400 and body["error"]["param"] == "input"
    status, body = post(url, {"model": "faq", "input": "word " * 100})
    assert status == 400 and "at most 24" in body["error"]["message"]
