"""Configuration of knowledge distillation (``method: distill``): only the fields it reads.

``model`` is the student (a model directory, GGUF, alias, or a run directory whose ``final/`` it
starts from); ``distill.teacher`` is the teacher (a run directory: its ``final/``, merged or an
adapter on its base; or a model directory, GGUF or alias). What trains in the student is SFT's
choice (``adapter``/``lora``/... sections, ``train.trainable_top_layers``); the data section is
SFT's (the replies are the off-policy targets, their prompts the on-policy prompts).
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from tunesmith.config.sections import (
    AdapterRunConfig,
    BatchFields,
    CheckpointingFields,
    EvalFields,
    RunFields,
    Section,
    TopLayersFields,
)


class DistillTrainSection(EvalFields, TopLayersFields, CheckpointingFields, BatchFields, RunFields):
    """The train fields distillation reads. Several processes (torchrun) replicate the student
    with DDP; its held-out metric is the distillation loss on the held-out replies."""


class DistillSection(Section):
    """The teacher, the divergence and the data source (Agarwal et al. 2024 for the GKD terms)."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, validate_by_name=True, serialize_by_alias=True
    )

    teacher: str = Field(
        ...,
        description="The teacher: a run directory (its final/, merged or an adapter on its "
        "base), a model directory, a .gguf file or an alias. It must share the student's "
        "tokenizer (checked before training).",
    )
    loss: Literal["forward_kl", "reverse_kl", "jsd"] = Field(
        "forward_kl",
        description="forward_kl = KL(teacher || student) (Hinton et al. 2015); reverse_kl = "
        "KL(student || teacher) (MiniLLM, Gu et al. 2024); jsd = generalized Jensen-Shannon "
        "divergence with distill.beta (GKD, Agarwal et al. 2024).",
    )
    temperature: float = Field(
        1.0, gt=0, description="Both logits are divided by T; the divergence is scaled by T^2."
    )
    beta: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="jsd only: the teacher's weight in the mixture; 0 = forward KL, 1 = reverse "
        "KL (TRL's GKD convention).",
    )
    hard_weight: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="w: per-token loss (1 - w) T^2 D + w CE, CE = the hard-label cross-entropy "
        "on the dataset's reply tokens (on-policy samples have no hard label: w = 0 there).",
    )
    on_policy_fraction: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        alias="lambda",
        description="GKD's lambda: the share of steps whose targets the student samples itself "
        "(the teacher scores them); the others train on the dataset's replies (off-policy). "
        "Which steps are on-policy is fixed by train.seed and the step number.",
    )
    max_new_tokens: int = Field(64, ge=1, description="On-policy: tokens sampled per reply.")
    sample_temperature: float = Field(
        1.0, ge=0.0, description="On-policy: the student's sampling temperature (0 = greedy)."
    )
    chunk_size: int = Field(
        256,
        ge=1,
        description="Positions whose logits (student and teacher, [chunk, vocab]) exist at once; "
        "the student's chunk logits are recomputed in the backward pass.",
    )
    cache_top_k: int | None = Field(
        None,
        ge=1,
        description="Off-policy steps: compute the teacher once before training and keep only "
        "its k largest logits per reply token, cached in the run dir (k recorded in the cache); "
        "the loss is then taken on those k ids, both distributions renormalised there. None = "
        "the teacher runs live every step.",
    )

    @model_validator(mode="after")
    def _knobs_read(self) -> DistillSection:
        if self.beta != 0.5 and self.loss != "jsd":
            raise ValueError(f"distill.beta is read by distill.loss=jsd only (got {self.loss})")
        on_policy_knobs = {"max_new_tokens": 64, "sample_temperature": 1.0}
        for name, default in on_policy_knobs.items():
            if getattr(self, name) != default and self.on_policy_fraction == 0.0:
                raise ValueError(
                    f"distill.{name} is read on on-policy steps only, and distill.lambda is 0"
                )
        if self.cache_top_k is not None and self.on_policy_fraction == 1.0:
            raise ValueError(
                "distill.cache_top_k caches the teacher on the dataset's replies, but "
                "distill.lambda=1 makes every step on-policy (sampled replies, scored live)"
            )
        return self


class DistillConfig(AdapterRunConfig):
    method: Literal["distill"] = "distill"
    train: DistillTrainSection = DistillTrainSection()  # type: ignore[assignment]
    distill: DistillSection

    @model_validator(mode="after")
    def _no_packing(self) -> DistillConfig:
        if self.data.packing:
            raise ValueError(
                "data.packing is not read by method distill: on-policy steps replace each "
                "example's reply by a sample, so every example keeps its own row"
            )
        return self
