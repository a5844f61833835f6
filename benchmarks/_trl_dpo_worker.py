#!/usr/bin/env python3
"""One TRL ``DPOTrainer`` run (LoRA via PEFT), as a subprocess of ``compare_trl_dpo.py``.

Usage: ``python benchmarks/_trl_dpo_worker.py SPEC.json``; the spec names the model directory,
the preference JSONL (``prompt``/``chosen``/``rejected`` strings, converted here to TRL's
conversational form so TRL applies the chat template as tunesmith does), precision, LoRA and
optimizer settings, steps, ``precompute_ref`` and an output directory. Writes ``metrics.jsonl``
(``step``, ``loss``, ``step_seconds``, ``step_cpu_seconds``; step 1's CPU time is None as in the
driver's sampling of tunesmith) and ``summary.json``.

Step time is the interval between consecutive ``on_step_end`` callbacks (the first from
``on_epoch_begin``), as in ``_trl_worker.py``. With ``precompute_ref_log_probs`` TRL computes
the reference log-probs before ``on_epoch_begin``, so that pass is outside the step times in
both tools (tunesmith's ``step_seconds`` excludes its precompute pass too).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _trl_worker import StepRecorder


def _rows(path: str) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [
        {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
        }
        for r in rows
    ]


def _dpo_config(spec: dict[str, Any]) -> Any:
    from trl import DPOConfig

    return DPOConfig(
        output_dir=str(Path(spec["out_dir"]) / "trainer"),
        max_steps=spec["steps"],
        per_device_train_batch_size=spec["micro_batch_size"],
        gradient_accumulation_steps=spec["grad_accum"],
        learning_rate=spec["lr"],
        lr_scheduler_type="cosine",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch",
        bf16=spec["precision"] == "bf16",
        gradient_checkpointing=spec.get("gradient_checkpointing", False),
        use_cpu=True,
        max_length=spec["max_length"],
        beta=spec["beta"],
        loss_type=["sigmoid"],
        precompute_ref_log_probs=spec["precompute_ref"],
        precompute_ref_batch_size=spec["micro_batch_size"],
        dataloader_num_workers=0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=spec["seed"],
    )


def main(argv: list[str]) -> int:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOTrainer

    spec = json.loads(Path(argv[0]).read_text())
    out = Path(spec["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(spec["seed"])
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(
        spec["model_dir"], dtype=torch.float32, attn_implementation="sdpa"
    )
    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    recorder = StepRecorder()
    trainer = DPOTrainer(
        model=model,
        args=_dpo_config(spec),
        train_dataset=Dataset.from_list(_rows(spec["data"])),
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[recorder],
    )
    t0 = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - t0
    with (out / "metrics.jsonl").open("w") as fh:
        for i, seconds in enumerate(recorder.seconds, 1):
            row = {
                "step": i,
                "split": "train",
                "loss": recorder.losses.get(i),
                "step_seconds": seconds,
                "step_cpu_seconds": recorder.cpu_seconds[i - 1] if i > 1 else None,
            }
            fh.write(json.dumps(row) + "\n")
    summary = {
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "train_seconds": train_seconds,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({"steps": len(recorder.seconds), "train_seconds": train_seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
