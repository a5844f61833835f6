"""Configuration of PPO-based RLHF (``method: ppo``): prompts, the run, the adapter and PPO itself.

One training *step* is one PPO iteration (``train.max_steps`` counts iterations). The sections
hold only what PPO reads: the prompts come through the one prompt reader (no packing, replay or
loss masks), the held-out evaluation scores greedy replies to held-out prompts with the reward
model (``eval_every``, ``best/``, early stopping), and the policy is LoRA on the unquantized base
model, whose adapter switched off is the reference.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tunesmith.config.sections import (
    LORA_FAMILY,
    AdapterSection,
    BaseRunConfig,
    LoraSection,
    Section,
)


class PPODataSection(Section):
    """Prompt records (:mod:`tunesmith.data.prompts`): ``prompt``, ``messages`` (a trailing
    assistant reply is dropped) or preference pairs (their prompt)."""

    train: list[str] = Field(
        ...,
        description="Prompt file(s): jsonl, json, csv, parquet or a saved `datasets` directory.",
    )
    validation: list[str] | None = Field(
        None,
        description="Held-out prompt file(s): the policy's greedy replies to them are scored by "
        "the reward model. When absent, `val_fraction` of train is held out with a fixed seed.",
    )
    split: str = Field("train", description="Split to read from a saved DatasetDict directory.")
    template: Literal["tokenizer", "chatml", "llama2", "llama3", "alpaca"] = Field(
        "tokenizer", description="Chat template: the tokenizer's own, or a built-in by name."
    )
    system_prompt: str | None = Field(
        None, description="A system turn put before every prompt that has none."
    )
    max_prompt_length: int = Field(
        512, ge=1, description="Longer prompts are an error naming file and line (or rejects)."
    )
    on_error: Literal["raise", "skip"] = Field(
        "raise", description="Bad records: stop with an error, or skip each into rejects.jsonl."
    )
    val_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="Held out of train when no validation is given."
    )
    max_val_examples: int | None = Field(
        200, ge=1, description="At most this many held-out prompts (a fixed-seed sample)."
    )
    seed: int = Field(1234, description="Seed of the held-out split (train.seed orders prompts).")

    @field_validator("train", "validation", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class PPOTrainSection(Section):
    output_dir: str = "runs"
    run_name: str | None = Field(None, description="Default: <method>-<timestamp>.")
    max_steps: int | None = Field(
        None, ge=1, description="PPO iterations; default: epochs x prompts / prompts_per_iteration."
    )
    epochs: float = Field(1.0, gt=0, description="Passes over the prompts (when no max_steps).")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="auto = bf16 autocast on CUDA with bf16 support and on CPUs with native bf16 "
        "(AVX-512 BF16 / AMX), fp32 otherwise.",
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N.")
    parallel: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="With several processes (torchrun): ddp; each rank samples and scores its "
        "share of every iteration's prompts. fsdp is not supported by ppo.",
    )
    seed: int = Field(
        42, description="LoRA init, prompt order, sampling and minibatch order all derive from it."
    )
    save_every: int | None = Field(None, ge=1, description="Iterations between checkpoints.")
    keep_last: int = Field(2, ge=1, description="Checkpoints kept on disk.")
    log_every: int = Field(1, ge=1, description="Iterations between metrics lines.")
    eval_every: int | None = Field(
        None,
        ge=1,
        description="Iterations between held-out evaluations (greedy replies scored by the reward "
        "model) that pick best/; the untrained policy and the last iteration are always evaluated.",
    )
    early_stopping_patience: int | None = Field(
        None,
        ge=1,
        description="Stop after this many evaluations without a higher held-out reward "
        "(best/ holds the policy of the highest one).",
    )
    resume: bool = Field(False, description="Continue from the latest checkpoint of the run dir.")


class PPOSection(Section):
    reward_model: str = Field(..., description="Reward-model run dir (or its final/).")
    prompts_per_iteration: int = Field(
        16, ge=1, description="Rollouts per PPO iteration (over all processes)."
    )
    max_new_tokens: int = Field(48, ge=1, description="Completion budget in tokens.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the rollouts.")
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1.0)
    epochs: int = Field(2, ge=1, description="Passes over each rollout batch.")
    minibatch_size: int = Field(
        8, ge=1, description="Completions per optimizer step (over all processes)."
    )
    clip_range: float = Field(0.2, gt=0, description="PPO ratio clip epsilon.")
    value_clip_range: float = Field(0.2, gt=0, description="Value-prediction clip.")
    vf_coef: float = Field(0.1, ge=0, description="Weight of the value loss.")
    gamma: float = Field(1.0, gt=0, le=1.0, description="Discount.")
    lam: float = Field(0.95, ge=0, le=1.0, description="GAE lambda.")
    kl_coef: float = Field(0.05, ge=0, description="Initial KL penalty coefficient beta.")
    kl_target: float | None = Field(
        6.0, gt=0, description="Adaptive KL target (nats per completion); null = fixed beta."
    )
    kl_horizon: int = Field(10000, ge=1, description="Adaptive controller horizon (samples).")
    whiten_advantages: bool = True
    reward_batch_size: int = Field(16, ge=1)
    generation_batch_size: int = Field(32, ge=1)


class PPOConfig(BaseRunConfig):
    method: Literal["ppo"] = "ppo"
    data: PPODataSection  # type: ignore[assignment]
    train: PPOTrainSection = PPOTrainSection()  # type: ignore[assignment]
    adapter: AdapterSection = AdapterSection()
    lora: LoraSection = LoraSection(dropout=0.0)
    ppo: PPOSection

    @model_validator(mode="after")
    def _check(self) -> PPOConfig:
        if self.adapter.type not in LORA_FAMILY:
            raise ValueError(
                "method ppo uses the base model with adapters disabled as its reference: "
                f"adapter.type must be lora, rslora or dora (got {self.adapter.type})"
            )
        if self.model.quantization != "none":
            raise ValueError("method ppo does not support model.quantization; use none")
        if self.lora.dropout != 0.0:
            raise ValueError(
                f"method ppo keeps dropout off (lora.dropout={self.lora.dropout}): the policy "
                "runs in eval mode so that rollout and update see the same policy; use 0"
            )
        if self.train.parallel == "fsdp":
            raise ValueError(
                "method ppo runs data-parallel only: train.parallel=fsdp is not supported "
                "(use ddp; every rank holds the policy, the value head and the reward model)"
            )
        return self
