"""Configuration of GRPO (``method: grpo``): prompt data, rewards, sampling and the loss.

One training *step* is one generation round: ``grpo.prompts_per_step`` prompts x
``grpo.num_generations`` completions are sampled and scored, then ``grpo.inner_steps`` optimizer
updates are taken on them (``train.max_steps`` counts rounds). Under torchrun each process
samples an equal share of the round's prompts. The reference policy is the base model with the
adapter switched off, so the adapter is of the LoRA family (on a quantized base: QLoRA).

The data, train and adapter sections are narrower than the shared ones: they hold only the
fields GRPO reads, so a field it would ignore (``train.grad_accum``, ``train.compile``,
``data.packing``...) is an error naming it instead of a silent no-op.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tunesmith.config.sections import (
    BaseRunConfig,
    CheckpointingFields,
    EvalFields,
    LoraSection,
    PromptDataSection,
    RunFields,
    Section,
)


class GRPOTrainSection(EvalFields, CheckpointingFields, RunFields):
    """The train fields GRPO reads: a step is one generation round (no grad_accum), the held-out
    metric is greedy accuracy (higher is better)."""

    micro_batch_size: int = Field(
        4, ge=1, description="Completions per forward in the log-prob passes and the updates."
    )
    parallel: Literal["ddp"] = Field(
        "ddp",
        description="With several processes (torchrun): ddp replicates the model, each process "
        "samples its share of every round.",
    )

    @field_validator("parallel", mode="before")
    @classmethod
    def _ddp_only(cls, value: Any) -> Any:
        if value != "ddp":
            raise ValueError(
                f"grpo runs with train.parallel=ddp only (got {value!r}): a LoRA adapter is "
                "small enough to replicate, and sampling needs the whole model on each process"
            )
        return value


class GRPOAdapterSection(Section):
    type: Literal["lora", "rslora", "dora"] = Field(
        "lora",
        description="The LoRA family only: the reference policy is the base model with the "
        "adapter switched off.",
    )

    @field_validator("type", mode="before")
    @classmethod
    def _lora_family(cls, value: Any) -> Any:
        if value not in ("lora", "rslora", "dora"):
            raise ValueError(
                "grpo uses the base model (adapter off) as its reference: adapter.type must be "
                f"lora, rslora or dora (got {value})"
            )
        return value


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
    eval_max_new_tokens: int | None = Field(None, ge=1, description="Default: max_new_tokens.")
    eval_before: bool = Field(
        True, description="Evaluate the untrained policy at step 0 (the cadence: train.eval_every)."
    )


class GRPOConfig(BaseRunConfig):
    method: Literal["grpo"] = "grpo"
    data: PromptDataSection  # type: ignore[assignment]
    train: GRPOTrainSection = GRPOTrainSection()  # type: ignore[assignment]
    adapter: GRPOAdapterSection = GRPOAdapterSection()
    lora: LoraSection = LoraSection()
    grpo: GRPOSection = GRPOSection()
    rewards: list[RewardSpec] = Field(
        default_factory=lambda: [RewardSpec(name="math")],
        description="Reward functions, summed with their weights. The first one defines "
        "held-out accuracy (share of replies scoring >= 1).",
    )

    @model_validator(mode="after")
    def _check(self) -> GRPOConfig:
        keys = [r.key for r in self.rewards]
        if len(set(keys)) != len(keys):
            raise ValueError(f"rewards: names must be unique (give a `label`): {keys}")
        if not self.rewards:
            raise ValueError("rewards: give at least one reward function")
        return self
