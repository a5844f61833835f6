#!/usr/bin/env python3
"""One TRL GRPOTrainer + PEFT run, as a subprocess of ``compare_trl_grpo.py``.

Usage: ``python benchmarks/_trl_grpo_worker.py SPEC.json``. The spec names the model dir, the
prompt JSONL (``prompt`` + ``answer``), G, prompts per step, max new tokens, LoRA and optimizer
settings, beta, steps and an output dir. Writes ``metrics.jsonl`` (one line per optimizer step:
``step``, ``step_seconds``, ``gen_tokens`` = completions x mean completion length as TRL logs
it, ``reward_mean``) and ``summary.json``.

TRL setup (1.16): conversational prompts (one user turn, rendered with the chat template),
``loss_type="dapo"`` (token-level normalisation, as tunesmith's ``loss_norm: token``),
``scale_rewards="group"``, ``num_iterations=1``, one optimizer step per generation batch
(``per_device_train_batch_size = G x prompts``), no gradient checkpointing, fp32 on CPU.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from tunesmith.rewards.math import math_reward


def _text(c: Any) -> str:
    return c[-1]["content"] if isinstance(c, list) else str(c)


def reward(prompts: list[Any], completions: list[Any], answer: list[str], **_: Any) -> list[float]:
    return math_reward(prompts, [_text(c) for c in completions], answer)


class Timer(TrainerCallback):
    """Step time = on_step_begin .. on_step_end (generation, scoring, forward/backward, update);
    written out when TRL logs that step's reward and completion length."""

    def __init__(self, out: Path, n_completions: int) -> None:
        self.fh = out.open("w")
        self.n = n_completions
        self.t0 = time.perf_counter()
        self.seconds: float | None = None

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.t0 = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.seconds = time.perf_counter() - self.t0

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        if not logs or "reward" not in logs:
            return
        row = {
            "step": state.global_step,
            "step_seconds": self.seconds,
            "gen_tokens": logs.get("completions/mean_length", 0.0) * self.n,
            "reward_mean": logs.get("reward"),
        }
        self.fh.write(json.dumps(row) + "\n")
        self.fh.flush()


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[1]).read_text())
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(x) for x in Path(spec["data"]).read_text().splitlines()]
    ds = Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": r["prompt"]}], "answer": r["answer"]}
            for r in rows
        ]
    )
    g, per = spec["num_generations"], spec["prompts_per_step"]
    cfg = GRPOConfig(
        output_dir=str(out / "trl"),
        per_device_train_batch_size=g * per,
        num_generations=g,
        max_completion_length=spec["max_new_tokens"],
        learning_rate=spec["lr"],
        lr_scheduler_type="constant",
        beta=spec["beta"],
        loss_type="dapo",
        scale_rewards="group",
        num_iterations=1,
        max_steps=spec["steps"],
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        save_strategy="no",
        report_to="none",
        seed=spec["seed"],
        disable_tqdm=True,
    )
    model = AutoModelForCausalLM.from_pretrained(spec["model"])
    tok = AutoTokenizer.from_pretrained(spec["model"])
    lora = LoraConfig(
        r=spec["lora_r"],
        lora_alpha=2 * spec["lora_r"],
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    timer = Timer(out / "metrics.jsonl", g * per)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=cfg,
        train_dataset=ds,
        processing_class=tok,
        peft_config=lora,
        callbacks=[timer],
    )
    t0 = time.perf_counter()
    trainer.train()
    (out / "summary.json").write_text(json.dumps({"train_seconds": time.perf_counter() - t0}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
