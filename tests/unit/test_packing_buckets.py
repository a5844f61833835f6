"""Static shapes for packed batches: bucket widths; bucketed rows train exactly as unbucketed."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from tunesmith.data.packing import bucket_width, collate_packed
from tunesmith.data.templates import Encoded
from tunesmith.engine.forward import forward_loss


def test_bucket_widths() -> None:
    assert [bucket_width(n) for n in (1, 8, 9, 90, 129, 300, 509, 513, 2100, 4000)] == [
        8, 8, 16, 96, 144, 320, 512, 576, 2304, 4096,
    ]  # fmt: skip
    widths = {bucket_width(n) for n in range(1, 4097)}
    for n in range(1, 4097):
        w = bucket_width(n)
        assert w >= n and w % 8 == 0
        assert w - n < max(8, w // 8)  # at most 1/8 wasted (8 slots for short rows)
    # 8 widths per doubling above 128: few distinct shapes for compile
    assert len([w for w in widths if 2048 < w <= 4096]) == 8
    assert len([w for w in widths if 256 < w <= 512]) == 8


def _rows() -> list[list[Encoded]]:
    g = torch.Generator().manual_seed(1)
    rows = []
    for sizes in ((11, 17, 5), (21, 9), (13,)):
        row = []
        for n in sizes:
            ids = torch.randint(3, 90, (n,), generator=g).tolist()
            labels = [-100] * (n // 3) + ids[n // 3 :]
            row.append(Encoded(ids, labels, sum(x != -100 for x in labels[1:]), False))
        rows.append(row)
    return rows


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_bucketed_rows_train_like_unbucketed(request: pytest.FixtureRequest, arch: str) -> None:
    model_dir = request.getfixturevalue("tiny_llama" if arch == "llama" else "tiny_gemma")
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation="sdpa"
    )
    rows = _rows()
    bucketed = collate_packed(rows, pad_id=0)
    tight = collate_packed(rows, pad_id=0, width=33)
    assert bucketed["input_ids"].shape == (3, 40) and tight["input_ids"].shape == (3, 33)
    results = []
    for batch in (bucketed, tight):
        model.zero_grad()
        loss, n = forward_loss(model, batch)
        loss.backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        results.append((float(loss.detach()), int(n), grads))
    (loss_b, n_b, g_b), (loss_t, n_t, g_t) = results
    assert n_b == n_t and abs(loss_b - loss_t) < 1e-5 * max(1.0, abs(loss_t))
    for name, g in g_t.items():
        torch.testing.assert_close(g_b[name], g, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="longest packed row"):
        collate_packed(rows, pad_id=0, width=32)
