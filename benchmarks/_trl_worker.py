#!/usr/bin/env python3
"""One TRL + PEFT SFT run, as a subprocess of ``compare_trl.py`` (so its peak RSS is its own).

Usage: ``python benchmarks/_trl_worker.py SPEC.json`` where the spec (written by the driver)
names the model directory, the prompt-completion JSONL (already in tunesmith's step order), the
precision, LoRA and optimizer settings, the number of steps and an output directory. Writes:

* ``metrics.jsonl``: one line per optimizer step in the same schema as tunesmith's
  (``step``, ``loss``, ``step_seconds``, ``trained_tokens``, ``real_tokens``, ``slots``,
  ``rows``, ``padding_waste``) plus ``assistant_tokens`` (trained tokens minus the token after
  each EOS, see below);
* ``summary.json``: parameter counts, training time and the first-batch loss check.

How TRL is set up (TRL 1.16, ``SFTTrainer``): the data is conversational prompt-completion
(``prompt=[user]``, ``completion=[assistant]``), so TRL renders the prompt with the tokenizer's
chat template and ``add_generation_prompt=True`` and the whole conversation without it, and
``completion_only_loss`` (default ``None`` = on for prompt-completion data; set explicitly here)
masks everything before the completion. SmolLM2's template writes ``<|im_end|>\\n`` after every
turn and ``<|im_end|>`` is the tokenizer's EOS, so TRL trains on the reply, its EOS, and the
newline after it; tunesmith trains on the reply and its EOS only (one token fewer per example).
``assistant_tokens`` and the label-matched loss below remove that token so both tools are
measured on the same tokens.

Step timing: the interval between consecutive ``on_step_end`` callbacks (the first from
``on_epoch_begin``), i.e. data loading + collation + forward/backward + optimizer + TRL's
per-step logging, like tunesmith's ``step_seconds`` (collation + step); ``step_cpu_seconds`` is
the process CPU time (all threads) over the same interval (None for step 1, as the driver's
sampling of tunesmith gives none for it either).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _bench_data import ids_digest
from transformers import TrainerCallback

IGNORE_INDEX = -100


class CountingCollator:
    """Wraps TRL's collator and records, per micro-batch, the token counts of the metrics."""

    def __init__(self, inner: Any, eos_id: int) -> None:
        self.inner = inner
        self.eos_id = eos_id
        self.batches: list[dict[str, int]] = []

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(examples)
        self.batches.append(batch_counts(batch, self.eos_id))
        return batch


def post_eos_mask(input_ids: torch.Tensor, labels: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Trained positions whose previous token is EOS: the ``\\n`` TRL trains after
    ``<|im_end|>``, which tunesmith does not (its assistant span ends at the end-of-turn)."""
    prev_eos = torch.zeros_like(input_ids, dtype=torch.bool)
    prev_eos[:, 1:] = input_ids[:, :-1] == eos_id
    return prev_eos & (labels != IGNORE_INDEX)


def batch_counts(batch: dict[str, Any], eos_id: int) -> dict[str, int]:
    """Trained, assistant (trained minus post-EOS), real (attended) and slot counts."""
    labels, ids = batch["labels"], batch["input_ids"]
    trained = int((labels[:, 1:] != IGNORE_INDEX).sum())
    extra = int(post_eos_mask(ids, labels, eos_id)[:, 1:].sum())
    real = int(batch["attention_mask"].sum()) if "attention_mask" in batch else ids.numel()
    return {
        "trained_tokens": trained,
        "assistant_tokens": trained - extra,
        "real_tokens": real,
        "slots": int(ids.numel()),
        "rows": int(ids.size(0)),
    }


class StepRecorder(TrainerCallback):
    """Wall time per optimizer step and the loss TRL logs for it."""

    def __init__(self) -> None:
        self.last = 0.0
        self.last_cpu = 0.0
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self.losses: dict[int, float] = {}
        self.grad_norms: dict[int, float] = {}

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self.seconds:
            self.last = time.perf_counter()
            self.last_cpu = time.process_time()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        self.seconds.append(now - self.last)
        self.cpu_seconds.append(cpu - self.last_cpu)
        self.last, self.last_cpu = now, cpu

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any
    ) -> None:
        if logs and "loss" in logs:
            self.losses[state.global_step] = float(logs["loss"])
            if "grad_norm" in logs:
                self.grad_norms[state.global_step] = float(logs["grad_norm"])


def _sft_config(spec: dict[str, Any]) -> Any:
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(Path(spec["out_dir"]) / "trainer"),
        max_steps=spec["steps"],
        per_device_train_batch_size=spec["micro_batch_size"],
        gradient_accumulation_steps=spec["grad_accum"],
        learning_rate=spec["lr"],
        lr_scheduler_type=spec["schedule"],
        warmup_steps=spec["warmup_steps"],
        weight_decay=spec["weight_decay"],
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        max_grad_norm=spec["max_grad_norm"],
        optim="adamw_torch",
        bf16=spec["precision"] == "bf16",
        fp16=False,
        use_cpu=True,
        gradient_checkpointing=spec["gradient_checkpointing"],
        # TRL refuses a length cap with padding_free but no packing (the data is pre-truncated)
        max_length=None if spec.get("padding_free") else spec["max_length"],
        packing=False,
        padding_free=spec.get("padding_free", False),
        completion_only_loss=True,
        assistant_only_loss=False,
        train_sampling_strategy="sequential",  # the file is already in tunesmith's step order
        dataloader_num_workers=0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=spec["seed"],
    )


def _build_trainer(spec: dict[str, Any]) -> tuple[Any, CountingCollator, StepRecorder]:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = [json.loads(line) for line in Path(spec["data"]).read_text().splitlines() if line]
    model = AutoModelForCausalLM.from_pretrained(
        spec["model_dir"], dtype=torch.float32, attn_implementation="sdpa"
    )
    lora = LoraConfig(
        r=spec["lora_r"],
        lora_alpha=spec["lora_alpha"],
        lora_dropout=spec["lora_dropout"],
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    recorder = StepRecorder()
    trainer = SFTTrainer(
        model=model,
        args=_sft_config(spec),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[recorder],
    )
    counting = CountingCollator(trainer.data_collator, int(tokenizer.eos_token_id))
    trainer.data_collator = counting
    return trainer, counting, recorder


def _summed_losses(
    model: Any, ids: torch.Tensor, labels: torch.Tensor, eos_id: int
) -> tuple[float, float]:
    """(summed CE on TRL's labels, summed CE without the post-EOS token) for one sequence."""
    logits = model(input_ids=ids).logits[:, :-1].float()  # [1, T-1, V]
    target = labels[:, 1:]
    per_token = F.cross_entropy(
        logits.transpose(1, 2), target.clamp(min=0), reduction="none"
    )  # [1, T-1]
    trained = target != IGNORE_INDEX
    matched = trained & ~post_eos_mask(ids, labels, eos_id)[:, 1:]
    return float(per_token[trained].sum()), float(per_token[matched].sum())


def first_batch_check(trainer: Any, precision: str, eos_id: int) -> dict[str, Any]:
    """Loss of the untrained model on TRL's first batch, with TRL's labels and with the
    post-EOS token removed (tunesmith's label set). Computed before training, one unpadded
    sequence at a time (small memory: it must not raise the run's peak RSS). LoRA's B is zero
    at init, so dropout cannot change it: this is exactly the step-1 loss."""
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model
    sums, n_trl, n_matched, rows = [0.0, 0.0], 0, 0, []
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=precision == "bf16"):
        for row in range(batch["input_ids"].size(0)):
            keep = batch["attention_mask"][row].bool()
            ids = batch["input_ids"][row][keep].unsqueeze(0)
            rows.append(ids[0].tolist())
            labels = batch["labels"][row][keep].unsqueeze(0)
            trl_sum, matched_sum = _summed_losses(model, ids, labels, eos_id)
            sums[0] += trl_sum
            sums[1] += matched_sum
            n_trl += int((labels[:, 1:] != IGNORE_INDEX).sum())
            n_matched += int(
                ((labels[:, 1:] != IGNORE_INDEX) & ~post_eos_mask(ids, labels, eos_id)[:, 1:]).sum()
            )
    return {
        "trl_labels_loss": sums[0] / n_trl,
        "trl_trained_tokens": n_trl,
        "matched_labels_loss": sums[1] / n_matched,
        "matched_trained_tokens": n_matched,
        "input_ids_sha256": ids_digest(rows),
    }


def step_metrics(
    counting: CountingCollator, recorder: StepRecorder, grad_accum: int
) -> list[dict[str, Any]]:
    """Per optimizer step: sum the micro-batch counts of that step and attach time and loss."""
    out = []
    for i, seconds in enumerate(recorder.seconds):
        parts = counting.batches[i * grad_accum : (i + 1) * grad_accum]
        m: dict[str, Any] = {k: sum(p[k] for p in parts) for k in parts[0]}
        step = i + 1
        m.update(
            step=step,
            split="train",
            loss=recorder.losses.get(step),
            grad_norm=recorder.grad_norms.get(step),
            step_seconds=seconds,
            step_cpu_seconds=recorder.cpu_seconds[i] if i > 0 else None,
            padding_waste=1.0 - m["real_tokens"] / m["slots"],
        )
        out.append(m)
    return out


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    out = Path(spec["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(spec["seed"])
    trainer, counting, recorder = _build_trainer(spec)
    eos_id = counting.eos_id
    check = first_batch_check(trainer, spec["precision"], eos_id) if spec["loss_check"] else None
    counting.batches.clear()  # the check's batch is not a training batch
    t0 = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - t0
    rows = step_metrics(counting, recorder, spec["grad_accum"])
    with (out / "metrics.jsonl").open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters())
    summary = {
        "trainable_params": trainable,
        "total_params": total,
        "train_seconds": train_seconds,
        "first_batch_check": check,
        "gradient_checkpointing": spec["gradient_checkpointing"],
        "collator": type(counting.inner).__name__,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({"steps": len(rows), "train_seconds": train_seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
