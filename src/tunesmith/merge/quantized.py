"""What merging a QLoRA (or int8-base) adapter changes, measured rather than assumed.

A LoRA adapter trained on a quantized base learned a correction to the *quantized* weights
W_q. ``merge_run`` folds it into the dequantized full-precision base W instead (4-bit weights
cannot absorb a dense update without re-quantizing), so the merged model computes with
W + BA where training saw W_q + BA. This module measures, on the verification prompts:

- ``as_trained``: the adapter on the quantized base (what training optimised) against the merged
  full-precision model: the price of merging into W instead of W_q;
- ``requantized``: the merged model loaded back in the training quantization against the merged
  full-precision model: what re-quantizing the merged weights for deployment would cost, with
  the weight bytes of both.

Both are reported, never used as pass/fail: the merge itself is verified against the adapter
on the full-precision base, which is exactly what the merged weights represent.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import torch

from tunesmith.engine.rundir import saved_setting
from tunesmith.merge.verify import Outputs, compare, model_outputs
from tunesmith.models.load import load_causal_lm
from tunesmith.models.quantization import base_weight_bytes


def training_quantization(adapter_dir: Path) -> str:
    """``model.quantization`` of the run that produced ``adapter_dir`` (``none`` if unknown)."""
    return str(saved_setting(adapter_dir, "model.quantization", "none"))


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("max_abs_logit_diff", "greedy_agreement", "prompts", "greedy_tokens")
    return {k: result[k] for k in keys}


def quantization_report(
    adapter_dir: Path,
    base: Path,
    merged_dir: Path,
    merged: Outputs,
    prompts: list[list[int]],
    new_tokens: int,
    device: torch.device,
) -> dict[str, Any] | None:
    """The two comparisons above for a run trained on a quantized base; None otherwise."""
    from peft import PeftModel

    kind = training_quantization(adapter_dir)
    if kind == "none":
        return None
    quantized = load_causal_lm(base, dtype=torch.float32, device=device, quantization=kind)
    trained = PeftModel.from_pretrained(quantized, str(adapter_dir)).eval()
    as_trained = compare(merged, model_outputs(trained, prompts, new_tokens), tolerance=0.0)
    del trained, quantized
    gc.collect()
    full = load_causal_lm(merged_dir, dtype=torch.float32, device=device)
    full_bytes = base_weight_bytes(full)
    del full
    requant = load_causal_lm(merged_dir, dtype=torch.float32, device=device, quantization=kind)
    requantized = compare(merged, model_outputs(requant, prompts, new_tokens), tolerance=0.0)
    requant_bytes = base_weight_bytes(requant)
    del requant
    gc.collect()
    return {
        "trained_on": kind,
        "merged_into": "the dequantized full-precision base (float32), not the quantized weights",
        "as_trained": _summary(as_trained),
        "requantized": {
            **_summary(requantized),
            "weight_bytes": requant_bytes,
            "merged_weight_bytes": full_bytes,
        },
    }
