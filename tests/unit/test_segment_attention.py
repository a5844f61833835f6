"""Per-example SDPA over packed rows (no T x T mask) gives the dense block-mask path's loss and
gradients, and the one-by-one logits, on Llama and on Gemma 3's sliding-window layers."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from tunesmith.data.dataset import collate
from tunesmith.data.packing import collate_packed
from tunesmith.data.templates import Encoded
from tunesmith.engine.forward import forward_logits, forward_loss, model_inputs
from tunesmith.engine.segment_attention import NAME, register, uses_segments


def _rows() -> list[list[Encoded]]:
    g = torch.Generator().manual_seed(3)
    rows = []
    for sizes in ((31, 17, 5), (40, 9), (13,)):
        row = []
        for n in sizes:
            ids = torch.randint(3, 90, (n,), generator=g).tolist()
            labels = [-100] * (n // 3) + ids[n // 3 :]
            row.append(Encoded(ids, labels, sum(x != -100 for x in labels[1:]), False))
        rows.append(row)
    return rows


def _loss_and_grads(model, batch):
    model.zero_grad()
    loss, n = forward_loss(model, batch)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), int(n), grads


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_segments_equal_dense_mask_and_one_by_one(request: pytest.FixtureRequest, arch: str):
    model_dir = request.getfixturevalue("tiny_llama" if arch == "llama" else "tiny_gemma")
    extra = {"sliding_window": 8} if arch == "gemma3_text" else {}  # segments longer than it
    dense = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation="sdpa", **extra
    )
    seg = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation="sdpa", **extra
    )
    seg.set_attn_implementation(register())
    assert uses_segments(seg) and not uses_segments(dense)
    rows = _rows()
    batch = collate_packed(rows, pad_id=0)
    ids = model_inputs(seg, batch)["attention_mask"]
    ids = ids["full_attention"] if isinstance(ids, dict) else ids
    assert ids.shape == (3, 1, 1, batch["input_ids"].size(1))  # no T x T mask
    loss_d, n_d, g_d = _loss_and_grads(dense, batch)
    loss_s, n_s, g_s = _loss_and_grads(seg, batch)
    assert n_d == n_s and abs(loss_d - loss_s) < 1e-5 * max(1.0, abs(loss_d))
    for name, g in g_d.items():
        torch.testing.assert_close(g_s[name], g, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        packed = forward_logits(seg, batch)
        first = rows[0]
        alone = forward_logits(seg, collate([first[1]], 0))[0]  # padded path: plain SDPA
        at = len(first[0].input_ids)
        torch.testing.assert_close(packed[0, at : at + alone.size(0)], alone, atol=1e-5, rtol=1e-4)


def test_generation_falls_back_to_sdpa(tiny_llama) -> None:
    """Calls without the example-id map (a KV-cached generate) run plain SDPA."""
    ref = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32)
    seg = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32)
    seg.set_attn_implementation(register())
    prompt = torch.tensor([[1, 5, 9, 13, 17], [0, 0, 1, 7, 8]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    kw = dict(attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(seg.generate(prompt, **kw), ref.generate(prompt, **kw))
    assert seg.config._attn_implementation == NAME
