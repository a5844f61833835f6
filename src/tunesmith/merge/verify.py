"""Run the same prompts through a reference model and a merged/exported one and compare.

The comparison is on the full-sequence logits of each prompt (max |difference|, float32) and on
greedy continuations of ``new_tokens`` tokens (the fraction of prompts whose continuations are
token-for-token identical). Prompts come from the run's held-out split (the first user turn of
each of the first N conversations, rendered with the run's template) or, without one, from a
fixed list.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunesmith.data.records import Message
from tunesmith.data.templates import encode_prompt

FIXED_PROMPTS = (
    "Hello! Who are you?",
    "What is 2 plus 3?",
    "Write one sentence about the sea.",
    "List three colours.",
)
DEFAULT_TOLERANCE = 1e-3


@dataclass
class Outputs:
    """What a model produced for the verification prompts."""

    logits: list[torch.Tensor]  # one [T, V] float32 tensor per prompt, on the CPU
    greedy: list[list[int]]  # the greedy continuation of each prompt


def _run_settings(run_dir: Path | None) -> tuple[str, Path | None]:
    if run_dir is None:
        return "tokenizer", None
    from tunesmith.engine.rundir import saved_setting

    val = run_dir / "data" / "val.jsonl"
    template = saved_setting(run_dir, "data.template", "tokenizer")
    return str(template), (val if val.is_file() else None)


def _first_turns(val: Path, n: int) -> list[list[Message]]:
    """System prompt + first user turn of the first ``n`` held-out conversations."""
    convs: list[list[Message]] = []
    for line in val.read_text(encoding="utf-8").splitlines():
        msgs = json.loads(line).get("messages") if line.strip() else None
        if not msgs:
            continue
        head: list[Message] = []
        for m in msgs:
            head.append(Message(m["role"], m["content"]))
            if m["role"] == "user":
                convs.append(head)
                break
        if len(convs) >= n:
            break
    return convs


def verification_prompts(tokenizer: Any, run_dir: Path | None, n: int = 4) -> list[list[int]]:
    """Token ids of ``n`` prompts: the run's held-out first user turns, else fixed prompts."""
    template, val = _run_settings(run_dir)
    convs = _first_turns(val, n) if val is not None else []
    if not convs:
        convs = [[Message("user", p)] for p in FIXED_PROMPTS[:n]]
    try:
        return [encode_prompt(c, tokenizer, template) for c in convs]
    except Exception:  # a tokenizer without a chat template: plain text prompts
        return [list(tokenizer(c[-1].content)["input_ids"]) for c in convs]


@torch.no_grad()
def model_outputs(model: Any, prompts: list[list[int]], new_tokens: int = 8) -> Outputs:
    """Logits of each prompt and its greedy continuation (one prompt at a time: no padding)."""
    device = next(model.parameters()).device
    logits: list[torch.Tensor] = []
    greedy: list[list[int]] = []
    for ids in prompts:
        x = torch.tensor([ids], device=device)
        logits.append(model(input_ids=x).logits[0].float().cpu())
        out = model.generate(
            input_ids=x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,  # compare the same number of tokens every time
            do_sample=False,
            pad_token_id=0,
        )
        greedy.append(out[0, len(ids) :].tolist())
    return Outputs(logits, greedy)


def compare(
    reference: Outputs, candidate: Outputs, tolerance: float = DEFAULT_TOLERANCE
) -> dict[str, Any]:
    """Max |logit difference| and greedy agreement; ``ok`` when within ``tolerance``."""
    diffs = [
        (a - b).abs().max().item() for a, b in zip(reference.logits, candidate.logits, strict=True)
    ]
    same = [a == b for a, b in zip(reference.greedy, candidate.greedy, strict=True)]
    # NaN compares false with everything, so max() alone could skip it: count it as infinite.
    max_diff = max((d if math.isfinite(d) else math.inf for d in diffs), default=0.0)
    agreement = sum(same) / len(same) if same else 1.0
    ok = max_diff <= tolerance
    reason = "" if ok else f"max |logit diff| {max_diff:.3g} > tolerance {tolerance:g}"
    return {
        "ok": ok,
        "reason": reason,
        "prompts": len(diffs),
        "max_abs_logit_diff": max_diff,
        "per_prompt_max_abs_logit_diff": diffs,
        "greedy_tokens": len(reference.greedy[0]) if reference.greedy else 0,
        "greedy_agreement": agreement,
        "tolerance": tolerance,
        "dtype": "float32",
    }
