"""Configuration of preference optimisation (``method: dpo``): only the fields it reads.

The adapter sections (``adapter``, ``lora``, ``prefix``, ``prompt``, ``ia3``), ``model``,
``optim`` and ``tracking`` are SFT's, so everything about *what* trains reads the same in both
methods. The data section is the preference-pair reader's; the train section drops the shared
fields DPO does not read (``compile``). A knob of one loss set for another is refused.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tunesmith.config.sections import (
    PROMPT_LEARNING,
    AdapterRunConfig,
    BatchFields,
    CheckpointingFields,
    EvalFields,
    PairDataSection,
    ParallelFields,
    RunFields,
    Section,
    TopLayersFields,
)

REFERENCE_FREE = frozenset({"simpo", "orpo"})  # = tunesmith.losses.dpo's (config imports no torch)


class DPOTrainSection(
    EvalFields, TopLayersFields, ParallelFields, CheckpointingFields, BatchFields, RunFields
):
    """The train fields DPO reads (all but SFT's ``compile``); its held-out metric is the DPO
    loss (lower is better), evaluated also before the first step."""


class DPOSection(Section):
    loss: Literal["sigmoid", "ipo", "hinge", "simpo", "orpo"] = Field(
        "sigmoid",
        description="sigmoid = DPO (Rafailov et al. 2023; label_smoothing > 0 = conservative "
        "DPO); ipo (Azar et al. 2023, per-token averaged log-ratios as in TRL); hinge (SLiC, "
        "Zhao et al. 2023); simpo (Meng et al. 2024, reference-free, length-normalised); orpo "
        "(Hong et al. 2024, odds ratio + SFT, reference-free).",
    )
    beta: float = Field(
        0.1,
        description="Strength of the KL constraint to the reference (DPO's beta; IPO's tau; "
        "hinge margin 1/beta; SimPO's reward scale). Must be > 0.",
    )
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=0.5, description="sigmoid only: assumed share of flipped labels (cDPO)."
    )
    simpo_gamma: float = Field(0.5, ge=0.0, description="SimPO target reward margin gamma.")
    orpo_lambda: float = Field(0.1, gt=0.0, description="ORPO weight of the odds-ratio term.")
    sft_weight: float = Field(
        0.0,
        ge=0.0,
        description="RPO (Pang et al. 2024): add this weight times the chosen reply's per-token "
        "NLL to the loss, so that the chosen likelihood does not fall (0 = off; ~1 in the paper). "
        "Not with orpo, which has its own SFT term.",
    )
    likelihood_warning: float = Field(
        2.0,
        gt=0.0,
        description="Warn once when the held-out chosen replies' mean log-prob has fallen by "
        "more than this many nats per sequence since the first evaluation.",
    )
    precompute_ref: bool = Field(
        False,
        description="Compute the reference log-probs of every pair once before training (cached "
        "in the run dir, keyed by a hash of the data) and skip the reference forward each step.",
    )
    layout: Literal["auto", "shared_prompt", "padded"] = Field(
        "auto",
        description="How a micro-batch of pairs goes through the model. shared_prompt: one "
        "segment prompt + chosen + rejected per pair, the prompt run once, the replies masked "
        "from each other, one pair per row unless pack_pairs (same log-probs as padded, fewer "
        "tokens). padded: prompt + chosen and prompt + rejected as separate padded rows. "
        "auto: shared_prompt, or padded where it cannot work (prefix/prompt tuning, flash "
        "attention); the run log says which.",
    )
    pack_pairs: bool = Field(
        False,
        description="shared_prompt layout only: pack several pairs' segments into rows of "
        "data.max_length tokens instead of one pair per row: less padding when pair lengths "
        "vary widely, larger attention matrices otherwise.",
    )

    @field_validator("beta")
    @classmethod
    def _beta_positive(cls, value: float) -> float:
        if not value > 0:
            raise ValueError(
                f"dpo.beta must be > 0 (got {value}): it scales the implicit reward "
                "beta * log(pi / pi_ref); typical values are 0.01 to 0.5"
            )
        return value


class DPOConfig(AdapterRunConfig):
    method: Literal["dpo"] = "dpo"
    data: PairDataSection  # type: ignore[assignment]
    train: DPOTrainSection = DPOTrainSection()  # type: ignore[assignment]
    dpo: DPOSection = DPOSection()

    @model_validator(mode="after")
    def _check_loss_knobs(self) -> DPOConfig:
        """A knob that the chosen loss would ignore is an error, not a silent no-op."""
        d = self.dpo
        unread = [
            ("label_smoothing", d.label_smoothing != 0.0, "sigmoid"),
            ("simpo_gamma", d.simpo_gamma != 0.5, "simpo"),
            ("orpo_lambda", d.orpo_lambda != 0.1, "orpo"),
        ]
        for name, changed, owner in unread:
            if changed and d.loss != owner:
                raise ValueError(f"dpo.{name} is read by dpo.loss={owner} only (got {d.loss})")
        if d.sft_weight and d.loss == "orpo":
            raise ValueError("dpo.sft_weight: dpo.loss=orpo already has an SFT term (orpo_lambda)")
        if d.precompute_ref and d.loss in REFERENCE_FREE:
            raise ValueError(
                f"dpo.precompute_ref: dpo.loss={d.loss} has no reference model to precompute"
            )
        if d.pack_pairs and d.layout == "padded":
            raise ValueError("dpo.pack_pairs packs the shared_prompt layout, but dpo.layout=padded")
        return self

    @model_validator(mode="after")
    def _check_layout(self) -> DPOConfig:
        if self.dpo.layout == "shared_prompt" and self.adapter.type in PROMPT_LEARNING:
            raise ValueError(
                f"dpo.layout=shared_prompt does not work with adapter.type={self.adapter.type}: "
                "the virtual tokens sit in front of the whole row, so the replies could not "
                "share one prompt; use dpo.layout=auto or padded"
            )
        return self
