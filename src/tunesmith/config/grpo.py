"""Configuration of GRPO (``method: grpo``): prompt data, rewards, sampling and the loss.

One training *step* is one generation round: ``grpo.prompts_per_step`` prompts x
``grpo.num_generations`` completions are sampled and scored, then ``grpo.inner_steps`` optimizer
updates are taken on them (``train.max_steps`` counts rounds). The adapter sections are SFT's;
the reference policy is the base model with the adapter switched off, so the adapter must be of
the LoRA family.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tunesmith.config.sections import (
    LORA_FAMILY,
    AdapterRunConfig,
    Section,
)


class PromptDataSection(Section):
    """Prompt records: ``prompt`` or ``messages`` plus the fields rewards read (``answer``...)."""

    train: str | list[str] = Field(..., description="Prompt file(s): jsonl, json, csv, parquet.")
    validation: str | list[str] | None = Field(
        None, description="Held-out prompt file(s): accuracy before and after training."
    )
    template: Literal["tokenizer", "chatml", "llama2", "llama3", "alpaca"] = "tokenizer"
    system_prompt: str | None = Field(
        None, description="A system turn put before every prompt that has none."
    )
    max_prompt_length: int = Field(
        512, ge=1, description="Longer prompts are an error naming file and line."
    )
    max_val_examples: int | None = Field(
        200, ge=1, description="Evaluate on the first N held-out records."
    )
    seed: int = 1234

    @field_validator("train", "validation", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class RewardSpec(Section):
    """One reward function and its weight in the summed reward."""

    name: str = Field(
        ...,
        description="Built-in `math`, `format` or `code`, or `module:function` with the "
        "signature (prompts, completions, **fields) -> list[float].",
    )
    weight: float = 1.0
    args: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments bound to the function."
    )
    label: str | None = Field(None, description="Name in metrics (default: `name`).")

    @property
    def key(self) -> str:
        return self.label or self.name


class GRPOSection(Section):
    num_generations: int = Field(8, ge=2, description="Completions per prompt (the group G).")
    prompts_per_step: int = Field(4, ge=1, description="Prompts per generation round.")
    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    stop: list[str] = Field(default_factory=list, description="Stop strings (text is cut).")
    generation_batch_size: int = Field(64, ge=1, description="Rows decoded together.")
    inner_steps: int = Field(
        1, ge=1, description="Optimizer updates per generation round (old log-probs fixed)."
    )
    epsilon: float = Field(0.2, gt=0, lt=1, description="Clip range: ratio in [1-eps, 1+eps].")
    epsilon_high: float | None = Field(
        None, gt=0, description="Upper clip (DAPO clip-higher); default: epsilon."
    )
    beta: float = Field(0.04, ge=0, description="KL penalty to the reference (k3 estimator).")
    scale_rewards: bool = Field(
        True, description="Divide advantages by the group std; false = Dr. GRPO (Liu et al.)."
    )
    loss_norm: Literal["token", "sequence"] = Field(
        "token",
        description="token: sum over all completion tokens / their count (DAPO); sequence: "
        "mean per completion, then mean (original GRPO).",
    )
    eval_every: int | None = Field(None, ge=1, description="Held-out eval every N rounds.")
    eval_max_new_tokens: int | None = Field(None, ge=1, description="Default: max_new_tokens.")
    eval_before: bool = Field(True, description="Evaluate the untrained policy at step 0.")


class GRPOConfig(AdapterRunConfig):
    method: Literal["grpo"] = "grpo"
    data: PromptDataSection  # type: ignore[assignment]
    grpo: GRPOSection = GRPOSection()
    rewards: list[RewardSpec] = Field(
        default_factory=lambda: [RewardSpec(name="math")],
        description="Reward functions, summed with their weights. The first one defines "
        "held-out accuracy (share of replies scoring >= 1).",
    )

    @model_validator(mode="after")
    def _check(self) -> GRPOConfig:
        if self.adapter.type not in LORA_FAMILY:
            raise ValueError(
                "grpo uses the base model (adapter off) as its reference: adapter.type must be "
                f"lora, rslora or dora (got {self.adapter.type})"
            )
        keys = [r.key for r in self.rewards]
        if len(set(keys)) != len(keys):
            raise ValueError(f"rewards: names must be unique (give a `label`): {keys}")
        if not self.rewards:
            raise ValueError("rewards: give at least one reward function")
        return self
