"""Configuration of PPO-based RLHF (``method: ppo``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tunesmith.config.sections import (
    LORA_FAMILY,
    AdapterSection,
    BaseRunConfig,
    LoraSection,
    Section,
)


class PPOSection(Section):
    reward_model: str = Field(..., description="Reward-model run dir (or its final/).")
    prompts_per_iteration: int = Field(16, ge=1, description="Rollouts per PPO iteration.")
    max_new_tokens: int = Field(48, ge=1, description="Completion budget in tokens.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the rollouts.")
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1.0)
    epochs: int = Field(2, ge=1, description="Passes over each rollout batch.")
    minibatch_size: int = Field(8, ge=1, description="Completions per optimizer step.")
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
        return self
