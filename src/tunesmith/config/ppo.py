"""Configuration of PPO-based RLHF (``method: ppo``): prompts, the run, the adapter and PPO itself.

One training *step* is one PPO iteration (``train.max_steps`` counts iterations). The sections
hold only what PPO reads: the prompts come through the one prompt reader (no packing, replay or
loss masks), the held-out evaluation scores greedy replies to held-out prompts with the reward
model (``eval_every``, ``best/``, early stopping), and the policy is LoRA on the unquantized base
model, whose adapter switched off is the reference.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tunesmith.config.sections import (
    LORA_FAMILY,
    AdapterSection,
    BaseRunConfig,
    EvalFields,
    LoraSection,
    ParallelFields,
    PromptDataSection,
    RunFields,
    Section,
)


class PPOTrainSection(EvalFields, ParallelFields, RunFields):
    """The train fields PPO reads: a step is one iteration (rollout + updates); the held-out
    metric is the reward model's score of greedy replies (higher is better)."""


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
    data: PromptDataSection  # type: ignore[assignment]
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
