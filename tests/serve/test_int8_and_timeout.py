"""int8 dynamic quantization with LoRA attached, and the per-request timeout."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.serve.lora_util import make_lora


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    return make_lora(tiny_llama, tmp_path_factory.mktemp("int8") / "alpha", seed=1)


@pytest.mark.parametrize("smooth", [False, True])
def test_int8_linear_is_the_int8_product_of_per_row_scales(smooth: bool) -> None:
    from tunesmith.serve.quantize import Int8Linear

    gen = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(16, 8, bias=True)
    x = torch.randn(2, 3, 16, generator=gen)
    x[..., 5] *= 30  # an outlier channel
    absmax = x.abs().amax(dim=(0, 1)) if smooth else None
    q = Int8Linear(lin, absmax)
    # By hand: s_j = sqrt(max|x_j| / max|W_:,j|) (1 without smoothing); W' = W * s, x' = x / s;
    # s_w = max|W'_row| / 127, Wq = round(W' / s_w); per token s_x = max|x'| / 127.
    w = lin.weight.detach()
    s = (absmax / w.abs().amax(0)).sqrt() if smooth else torch.ones(16)
    w, xs = w * s, x / s
    s_w = w.abs().amax(1) / 127
    wq = torch.round(w / s_w[:, None])
    s_x = xs.abs().amax(-1, keepdim=True) / 127
    xq = torch.round(xs / s_x)
    expected = (xq @ wq.T) * s_x * s_w + lin.bias.detach()
    assert q.weight.dtype == torch.int8 and wq.abs().max() == 127
    assert torch.allclose(q(x), expected, atol=1e-4)
    exact = lin(x).detach()
    assert 0 < (q(x) - exact).abs().max() < 0.03 * exact.abs().max()


def test_smoothing_helps_with_an_outlier_channel() -> None:
    from tunesmith.serve.quantize import Int8Linear

    gen = torch.Generator().manual_seed(1)
    lin = torch.nn.Linear(64, 32, bias=False)
    x = torch.randn(8, 64, generator=gen)
    x[:, 3] *= 200  # one channel two orders of magnitude above the rest
    exact = lin(x).detach()
    plain = (Int8Linear(lin)(x) - exact).abs().mean()
    smoothed = (Int8Linear(lin, x.abs().amax(0))(x) - exact).abs().mean()
    assert smoothed < 0.5 * plain, (smoothed, plain)


def test_int8_base_with_lora_stays_close_and_takes_new_adapters(
    tiny_llama: Path, adapter: Path
) -> None:
    from tunesmith.serve.host import ModelHost
    from tunesmith.serve.quantize import Int8Linear, is_quantized
    from tunesmith.serve.settings import ServeSettings

    def host(quantize: str, adapters: dict[str, Path]) -> ModelHost:
        settings = ServeSettings(
            base=str(tiny_llama), adapters=adapters, quantize=quantize, device="cpu"
        )
        return ModelHost(settings)

    fp32, int8 = host("none", {"a": adapter}), host("int8", {"a": adapter})
    late = host("int8", {})  # quantized first, adapter attached afterwards (peft wraps Int8Linear)
    late.add("a", adapter)
    int8.add("b", adapter)  # the same weights under a second name, added at run time
    assert is_quantized(int8.model) and not is_quantized(fp32.model)
    q_proj = int8.model.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.base_layer, Int8Linear) and "b" in q_proj.lora_A
    ids = torch.randint(0, 500, (2, 12), generator=torch.Generator().manual_seed(0))
    ids = torch.cat([ids, ids[:1]])  # rows 0 and 2: the same text
    mask = torch.ones_like(ids)
    base = int8.base_name
    with torch.no_grad():
        ref, _ = fp32.forward(["a", base, "a"], input_ids=ids, attention_mask=mask)
        got, _ = int8.forward(["a", base, "b"], input_ids=ids, attention_mask=mask)
        got_late, _ = late.forward(["a", base, "a"], input_ids=ids, attention_mask=mask)
    rel = ((got - ref).abs().amax(-1) / ref.abs().amax(-1)).max().item()
    assert 0 < rel < 0.1, rel  # quantized (not identical), yet close
    assert torch.allclose(got[0], got[2], atol=1e-5)  # 'b' is 'a' added later
    assert torch.allclose(got_late, got, atol=1e-5)
    # Per-token scales: a row's logits do not depend on its batchmates.
    with torch.no_grad():
        alone, _ = int8.forward([base], input_ids=ids[1:2], attention_mask=mask[1:2])
    assert torch.allclose(alone[0], got[1], atol=1e-4)


def test_request_timeout_is_a_504_and_the_server_goes_on(tiny_llama: Path) -> None:
    import http.client

    from tunesmith.serve.server import ServerThread, build
    from tunesmith.serve.settings import Limits, ServeSettings

    settings = ServeSettings(
        base=str(tiny_llama),
        device="cpu",
        limits=Limits(request_timeout_s=0.2, max_new_tokens=4),
    )
    server = build(settings)
    forward = server.host.forward

    def slow(models: list[str], **inputs: Any) -> Any:  # each forward past the deadline
        time.sleep(0.3)
        return forward(models, **inputs)

    server.host.forward = slow
    with ServerThread(server) as srv:
        body = {"model": str(tiny_llama), "prompt": "Hi", "max_tokens": 2}
        conn = http.client.HTTPConnection(srv.host, srv.port, timeout=30)
        conn.request("POST", "/v1/completions", body=json.dumps(body))
        resp = conn.getresponse()
        err = json.loads(resp.read())["error"]
        assert resp.status == 504 and err["code"] == "timeout"
        conn.request("GET", "/health")
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["status"] == "ok"
