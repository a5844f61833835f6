"""The LoRA speed levers keep their promises: a bf16 frozen base with fp32 adapters and optimizer
state (loss close to the fp32-base path), and adapters that still load with plain peft."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tunesmith.config.load import load_config
from tunesmith.engine.forward import forward_loss
from tunesmith.engine.optim import build_optimizer
from tunesmith.engine.precision import autocast, cpu_has_bf16, frozen_base_bf16, weight_dtype
from tunesmith.engine.trainable import build_trainable_model

CPU = torch.device("cpu")
needs_bf16 = pytest.mark.skipif(not cpu_has_bf16(), reason="CPU without native bf16")


def _cfg(model_dir: Path, precision: str, dtype: str = "auto") -> Any:
    return load_config(
        None,
        base={
            "model": {"name_or_path": str(model_dir), "dtype": dtype},
            "data": {"train": "unused.jsonl"},
            "train": {"seed": 0, "precision": precision},
            "lora": {"r": 4, "dropout": 0.0},
        },
    )


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 90, (2, 24), generator=g)
    return {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}


def test_frozen_base_dtype_rule() -> None:
    assert frozen_base_bf16(torch.device("cuda"), None)
    assert not frozen_base_bf16(CPU, "fp32")
    assert frozen_base_bf16(CPU, "bf16") == cpu_has_bf16()
    # weights that train stay fp32 whatever the precision
    assert weight_dtype("auto", CPU, base_trains=True, precision="bf16") == torch.float32
    assert weight_dtype("auto", CPU, base_trains=False, precision="fp32") == torch.float32


@needs_bf16
def test_bf16_base_fp32_adapters_and_state(tiny_llama: Path) -> None:
    model = build_trainable_model(_cfg(tiny_llama, "bf16"), tiny_llama, CPU)
    frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    trained = [p for p in model.parameters() if p.requires_grad]
    assert {p.dtype for p in frozen.values()} == {torch.bfloat16}
    assert trained and {p.dtype for p in trained} == {torch.float32}
    before = {n: p.detach().clone() for n, p in frozen.items()}
    opt = build_optimizer(model, _cfg(tiny_llama, "bf16").optim)
    with autocast("bf16", CPU):
        loss, _ = forward_loss(model, _batch())
    loss.backward()
    opt.step()
    states = [s for s in opt.state.values() if s]
    assert len(states) == len(trained)
    assert all(s["exp_avg"].dtype == torch.float32 for s in states)
    # the frozen base is bit-identical after the step
    for n, p in model.named_parameters():
        if n in before:
            assert torch.equal(p, before[n]), n


@needs_bf16
def test_bf16_base_loss_close_to_fp32_base(tiny_llama: Path) -> None:
    losses = []
    for dtype in ("auto", "float32"):  # auto: bf16 base here; float32: the fp32-base path
        model = build_trainable_model(_cfg(tiny_llama, "bf16", dtype), tiny_llama, CPU)
        with torch.no_grad(), autocast("bf16", CPU):
            loss, n = forward_loss(model, _batch())
        losses.append(float(loss) / int(n))
    assert abs(losses[0] - losses[1]) < 0.02 * abs(losses[1])


def test_saved_adapter_loads_with_plain_peft(tmp_path: Path, tiny_llama: Path) -> None:
    """An adapter trained through tunesmith's LoRA path (peft's own forward: at dropout 0 peft
    applies nn.Identity, so no copy of x is made) loads with plain peft, same logits."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = build_trainable_model(_cfg(tiny_llama, "fp32"), tiny_llama, CPU)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B starts at zero; make the adapter change the logits
            torch.nn.init.normal_(p, std=0.1)
    batch = _batch()
    model.eval()
    with torch.no_grad():
        ours = model(input_ids=batch["input_ids"]).logits
    model.save_pretrained(tmp_path / "adapter")
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32)
    plain = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        theirs = plain(input_ids=batch["input_ids"]).logits
        with plain.disable_adapter():
            without = plain(input_ids=batch["input_ids"]).logits
    assert not torch.allclose(ours, without)
    torch.testing.assert_close(ours, theirs)
