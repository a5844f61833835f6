"""The real SmolLM2-135M behind the server, fp32 and int8 (``-m integration``)."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_smollm2_answers_through_the_server(quantize: str) -> None:
    import openai

    from tunesmith.serve.server import ServerThread, build
    from tunesmith.serve.settings import ServeSettings

    server = build(ServeSettings(base=MODEL, device="cpu", quantize=quantize))
    with ServerThread(server) as srv:
        client: Any = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="-", max_retries=0)
        reply = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=16,
            temperature=0,
        )
    text = reply.choices[0].message.content
    assert "Paris" in text, text
