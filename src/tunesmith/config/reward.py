"""Configuration of reward-model training (``method: reward``): only the fields it reads.

Its data section is the preference-pair reader's (the field names match DPO's
``PairDataSection``); its train section drops the shared fields reward does not read
(packing, mixing, replay and ``train_on`` have no meaning for a scalar score of a whole sequence;
``compile``, ``gradient_checkpointing`` and ``trainable_top_layers`` are not offered).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tunesmith.config.sections import (
    AdapterSection,
    BaseRunConfig,
    BatchFields,
    EvalFields,
    LoraSection,
    PairDataSection,
    ParallelFields,
    RunFields,
    Section,
)


class RewardTrainSection(EvalFields, ParallelFields, BatchFields, RunFields):
    """The train fields reward-model training reads; its held-out metric is the pairwise loss
    (lower is better)."""


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
    data: PairDataSection  # type: ignore[assignment]
    train: RewardTrainSection = RewardTrainSection()  # type: ignore[assignment]
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
        return self
