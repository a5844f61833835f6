"""Configuration of reward-model training (``method: reward``): only the fields it reads.

Its data section is the preference-pair reader's (the field names match DPO's
``PreferenceDataSection``); its train section drops the shared fields reward does not read
(packing, mixing, replay and ``train_on`` have no meaning for a scalar score of a whole sequence;
``compile``, ``gradient_checkpointing`` and ``trainable_top_layers`` are not offered).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tunesmith.config.sections import AdapterSection, BaseRunConfig, LoraSection, Section


class RewardDataSection(Section):
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
        "tokenizer",
        description="Chat template a causal-LM backbone reads (prompt + reply); the tokenizer's "
        "own or a built-in by name. An encoder backbone reads `role: content` lines instead.",
    )
    max_length: int = Field(
        512,
        ge=8,
        description="Tokens per scored sequence (prompt + reply). Longer ones lose prompt tokens "
        "first, then reply tokens.",
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


class RewardTrainSection(Section):
    """The shared train fields reward reads."""

    output_dir: str = "runs"
    run_name: str | None = Field(None, description="Default: <method>-<timestamp>.")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps; default from epochs.")
    epochs: float = Field(1.0, gt=0)
    micro_batch_size: int = Field(
        4, ge=1, description="Pairs per micro-batch per process (both sides in one forward)."
    )
    grad_accum: int = Field(1, ge=1)
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="auto = bf16 autocast on CUDA with bf16 support and on CPUs with native bf16 "
        "(AVX-512 BF16 / AMX), fp32 otherwise.",
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N.")
    parallel: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="With several processes (torchrun): ddp replicates the model; fsdp (FSDP2) "
        "shards weights, gradients and optimizer state per transformer layer (decoder or "
        "encoder backbone).",
    )
    seed: int = Field(42, description="Seed of the head, LoRA's initial weights and data order.")
    eval_every: int | None = Field(
        None,
        ge=1,
        description="Steps between held-out evaluations (pairwise accuracy and loss); the "
        "untrained model and the final weights are always evaluated.",
    )
    early_stopping_patience: int | None = Field(
        None,
        ge=1,
        description="Stop after this many evaluations without a lower held-out pairwise loss "
        "(best/ holds the weights of the lowest one).",
    )
    save_every: int | None = Field(None, ge=1, description="Steps between checkpoints.")
    keep_last: int = Field(2, ge=1, description="Checkpoints kept on disk.")
    log_every: int = Field(1, ge=1)
    resume: bool = Field(False, description="Continue from the latest checkpoint of the run dir.")


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
    data: RewardDataSection  # type: ignore[assignment]
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
