"""Configuration of reward-model training (``method: reward``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tunesmith.config.sections import AdapterSection, BaseRunConfig, LoraSection, Section


class RewardSection(Section):
    margin: float = Field(
        0.0,
        ge=0.0,
        description="m in -log sigmoid(r_c - r_r - m) (Touvron et al. 2023); 0 = plain "
        "Bradley-Terry.",
    )
    eval_batch_size: int = Field(16, ge=1, description="Sequences per forward when evaluating.")


class RewardConfig(BaseRunConfig):
    method: Literal["reward"] = "reward"
    adapter: AdapterSection = AdapterSection()
    lora: LoraSection = LoraSection()
    reward: RewardSection = RewardSection()

    @model_validator(mode="after")
    def _check(self) -> RewardConfig:
        if self.adapter.type not in ("lora", "rslora", "dora", "full"):
            raise ValueError(
                f"method reward trains adapter.type lora, rslora, dora or full "
                f"(got {self.adapter.type})"
            )
        if self.model.quantization != "none":
            raise ValueError("method reward does not support model.quantization; use none")
        if self.data.packing:
            raise ValueError("method reward scores whole sequences: set data.packing=false")
        return self
