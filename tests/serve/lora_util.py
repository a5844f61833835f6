"""What the serving tests share: the API key, the limits, and LoRA adapters built in code."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

KEY = "test-key-123"
MAX_NEW = 16
MAX_PROMPT = 120


def make_lora(base_dir: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter with large random weights (so its greedy output visibly departs from the
    base), saved with peft as a training run would leave it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir))
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], lora_dropout=0.0
    )
    peft_model = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.6)
    peft_model.save_pretrained(str(out))
    return out


@dataclass
class Served:
    """A running test server: its URL, its adapter root, a directory outside that root."""

    url: str
    root: Path
    outside: Path
    server: Any
