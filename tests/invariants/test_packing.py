"""Packed rows never let one example attend to another: loss and gradients match unpacked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.helpers.runs import step_losses, train, write_chat_data, write_config
from tunesmith.data.dataset import collate
from tunesmith.data.packing import collate_packed, pack_first_fit_decreasing
from tunesmith.data.records import Example, Message
from tunesmith.data.templates import encode_example
from tunesmith.engine.forward import forward_logits
from tunesmith.losses.sft import token_cross_entropy


def _encoded(tok, n: int = 7, train_on: str = "assistant"):
    out = []
    for i in range(n):
        ex = Example(
            source="t",
            line=i + 1,
            messages=(
                Message("user", "Hello " * (1 + i % 3) + f"number {i}?"),
                Message("assistant", f"The answer is {i * 7}. " * (1 + i % 2)),
            ),
        )
        out.append(encode_example(ex, tok, max_length=128, train_on=train_on))
    return out


def _loss_and_grads(model, batches):
    model.zero_grad()
    total, count = 0.0, 0
    for batch in batches:
        loss, n = token_cross_entropy(forward_logits(model, batch), batch["labels"])
        loss.backward()
        total, count = total + float(loss), count + int(n)
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    return total, count, grads


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
@pytest.mark.parametrize("train_on", ["assistant", "all"])
def test_packed_equals_one_by_one(request: pytest.FixtureRequest, arch: str, train_on: str) -> None:
    model_dir = request.getfixturevalue("tiny_llama" if arch == "llama" else "tiny_gemma")
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation="sdpa"
    )
    enc = _encoded(tok, train_on=train_on)
    rows = pack_first_fit_decreasing([len(e.input_ids) for e in enc], capacity=160)
    assert len(rows) < len(enc)  # several examples share a row
    packed = collate_packed([[enc[i] for i in r.items] for r in rows], tok.pad_token_id)
    single = [collate([e], tok.pad_token_id) for e in enc]
    loss_p, n_p, grads_p = _loss_and_grads(model, [packed])
    loss_s, n_s, grads_s = _loss_and_grads(model, single)
    assert n_p == n_s
    assert abs(loss_p - loss_s) < 1e-5 * max(1.0, abs(loss_s))
    for name, g in grads_s.items():
        assert torch.allclose(grads_p[name], g, atol=1e-5, rtol=1e-4), name
    # and the logits of a packed example are those of the example alone
    with torch.no_grad():
        logits = forward_logits(model, packed)
        first = rows[0].items
        at = len(enc[first[0]].input_ids)
        alone = forward_logits(model, single[first[1]])[0]
        assert torch.allclose(logits[0, at : at + alone.size(0)], alone, atol=1e-5)


def test_first_fit_decreasing() -> None:
    rows = pack_first_fit_decreasing([5, 9, 3, 7, 1, 4], capacity=10)
    assert [r.items for r in rows] == [(1, 4), (3, 2), (0, 5)]
    assert [r.length for r in rows] == [10, 10, 9]
    with pytest.raises(ValueError, match="capacity"):
        pack_first_fit_decreasing([11], capacity=10)


def test_packed_training_through_the_cli(tmp_path: Path, tiny_llama: Path) -> None:
    data = write_chat_data(tmp_path / "d.jsonl", n=48)
    cfg = write_config(
        tmp_path,
        tiny_llama,
        data,
        data={"packing": True, "max_length": 96},
        train={"max_steps": 4, "micro_batch_size": 2, "eval_every": 2},
    )
    run = train(cfg)
    import json

    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["split"] == "epoch"]
    assert epochs and 0.5 < epochs[-1]["packing_efficiency"] <= 1.0
    assert 0.0 <= epochs[-1]["padding_waste"] < 0.5
    assert len(step_losses(run)) == 4


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_chunked_head_loss_equals_full_logits(request: pytest.FixtureRequest, arch: str) -> None:
    """forward_loss (head applied to trained positions only, in checkpointed chunks) gives the
    loss and gradients of the full-logits cross-entropy, LoRA-wrapped too."""
    from peft import LoraConfig, get_peft_model

    from tunesmith.engine.forward import forward_loss

    model_dir = request.getfixturevalue("tiny_llama" if arch == "llama" else "tiny_gemma")
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model = get_peft_model(
        base,
        LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.0, init_lora_weights=False),
    )
    batch = collate(_encoded(tok, n=4), tok.pad_token_id)
    model.zero_grad()
    full, n_full = token_cross_entropy(forward_logits(model, batch), batch["labels"])
    full.backward()
    ref = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    chunked, n_chunked = forward_loss(model, batch, chunk_size=7)
    chunked.backward()
    assert int(n_full) == int(n_chunked) and ref
    assert abs(float(full) - float(chunked)) < 1e-4
    for name, g in ref.items():
        got = dict(model.named_parameters())[name].grad
        assert torch.allclose(got, g, atol=1e-5, rtol=1e-4), name
