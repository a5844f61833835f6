"""Configuration of preference optimisation (``method: dpo``): only the fields it reads.

The adapter sections (``adapter``, ``lora``, ``prefix``, ``prompt``, ``ia3``), ``model``,
``optim`` and ``tracking`` are SFT's, so everything about *what* trains reads the same in both
methods. The data section is the preference-pair reader's; the train section drops the shared
fields DPO does not read (``compile``). A knob of one loss set for another is refused.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tunesmith.config.sections import PROMPT_LEARNING, AdapterRunConfig, Section

REFERENCE_FREE = frozenset({"simpo", "orpo"})  # = tunesmith.losses.dpo's (config imports no torch)


class PreferenceDataSection(Section):
    """Preference pairs (see :mod:`tunesmith.data.preference` for the record forms)."""

    train: str | list[str] = Field(
        ...,
        description="File(s) of preference pairs: jsonl, json, csv, parquet or a saved "
        "`datasets` directory; rows {prompt|messages, chosen, rejected}, or the conversational "
        "form where chosen and rejected are conversations ending in an assistant turn.",
    )
    validation: str | list[str] | None = Field(
        None,
        description="Held-out pair file(s). When absent, `val_fraction` of train is held out "
        "with a fixed seed.",
    )
    split: str = Field("train", description="Split to read from a saved DatasetDict directory.")
    template: Literal["tokenizer", "chatml", "llama2", "llama3", "alpaca"] = Field(
        "tokenizer", description="Chat template: the tokenizer's own, or a built-in by name."
    )
    max_length: int = Field(
        512,
        ge=8,
        description="Tokens per side (prompt + response). Longer pairs lose prompt tokens from "
        "the left first, then response tokens from the right; the count is logged.",
    )
    on_error: Literal["raise", "skip"] = Field(
        "raise",
        description="Malformed rows: stop with an error, or skip each into rejects.jsonl. Pairs "
        "with identical or empty sides always go to rejects.jsonl.",
    )
    val_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="Held out of train when no validation is given."
    )
    max_val_pairs: int | None = Field(
        None, ge=1, description="At most this many held-out pairs (a fixed-seed sample)."
    )
    seed: int = Field(1234, description="Seed of the held-out split.")


class DPOTrainSection(Section):
    """The shared train fields DPO reads."""

    output_dir: str = "runs"
    run_name: str | None = Field(None, description="Default: <method>-<timestamp>.")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps; default from epochs.")
    epochs: float = Field(1.0, gt=0)
    micro_batch_size: int = Field(
        4, ge=1, description="Pairs per micro-batch per process (both replies in one forward)."
    )
    grad_accum: int = Field(1, ge=1)
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="auto = bf16 autocast on CUDA with bf16 support and on CPUs with native bf16 "
        "(AVX-512 BF16 / AMX), fp32 otherwise.",
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N.")
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute each decoder layer's activations in the backward pass: less "
        "memory, slower steps.",
    )
    parallel: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="With several processes (torchrun): ddp replicates the model; fsdp (FSDP2) "
        "shards weights, gradients and optimizer state per decoder layer (and a full "
        "fine-tuning run's frozen reference copy).",
    )
    seed: int = Field(42, description="Seed of LoRA's initial weights, dropout and data order.")
    trainable_top_layers: int | None = Field(
        None,
        ge=1,
        description="Full fine-tuning only: freeze all but the top N decoder layers "
        "(and the final norm).",
    )
    eval_every: int | None = Field(
        None,
        ge=1,
        description="Steps between held-out evaluations (also one before the first step).",
    )
    early_stopping_patience: int | None = Field(
        None,
        ge=1,
        description="Stop after this many evaluations without a lower held-out DPO loss "
        "(best/ holds the weights of the lowest one).",
    )
    save_every: int | None = Field(None, ge=1, description="Steps between checkpoints.")
    keep_last: int = Field(2, ge=1, description="Checkpoints kept on disk.")
    log_every: int = Field(1, ge=1)
    resume: bool = Field(False, description="Continue from the latest checkpoint of the run dir.")


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
    data: PreferenceDataSection  # type: ignore[assignment]
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
