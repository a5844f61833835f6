"""Configuration of retriever (sentence-embedding) fine-tuning (``method: embed``).

Like classify, the data and train sections hold only the fields embed reads, so a field it would
ignore (``data.packing``, ``train.compile``...) is an error naming the field."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tunesmith.config.sections import (
    BaseRunConfig,
    BatchFields,
    CheckpointingFields,
    EvalFields,
    FileSplitFields,
    LoraSection,
    ParallelFields,
    RunFields,
    Section,
)


class EmbedSection(Section):
    mode: Literal["full", "lora"] = Field(
        "full", description="What trains: full = every encoder weight; lora = LoRA adapters."
    )
    temperature: float = Field(
        0.05,
        gt=0,
        description="InfoNCE temperature tau (logits = cosine / tau); 0.05 is "
        "sentence-transformers' MultipleNegativesRankingLoss default (scale 20).",
    )
    hard_negatives: Literal["none", "data", "mined"] = Field(
        "data",
        description="Extra negatives besides the in-batch ones: data = the rows' "
        "`negative_field` where present; mined = for each training query, the passage the base "
        "model ranks highest among the other training positives; none = in-batch only.",
    )
    query_field: str = Field("query", description="Query text field (CSV column / JSON key).")
    positive_field: str = Field("positive", description="Relevant passage field.")
    negative_field: str = Field("negative", description="Optional hard-negative passage field.")
    eval_batch_size: int = Field(64, ge=1, description="Texts per forward when evaluating.")


class EmbedLoraSection(LoraSection):
    target_modules: str | list[str] | None = Field(  # type: ignore[assignment]
        None,
        description="None = peft's default for the architecture (BERT: query, value); "
        "`all-linear` = every linear layer; a name, list or regex.",
    )


class EmbedDataSection(FileSplitFields):
    """Query/passage pair files and the held-out split (``data/split.py``'s one rule)."""

    train: list[str] = Field(
        ...,
        description="Pair file(s): jsonl, json, csv, parquet or a saved `datasets` directory; rows "
        "hold `embed.query_field`, `embed.positive_field` and optionally `embed.negative_field`.",
    )
    max_length: int = Field(128, ge=8, description="Tokens kept per text (longer ones are cut).")


class EmbedTrainSection(EvalFields, ParallelFields, CheckpointingFields, BatchFields, RunFields):
    """The train fields embed reads; its held-out metric is nDCG@10 (higher is better)."""


class EmbedConfig(BaseRunConfig):
    """A sentence encoder fine-tuned for retrieval; see ``docs/embed.md``."""

    method: Literal["embed"] = "embed"
    data: EmbedDataSection  # type: ignore[assignment]
    train: EmbedTrainSection = EmbedTrainSection()  # type: ignore[assignment]
    embed: EmbedSection = EmbedSection()
    lora: EmbedLoraSection = EmbedLoraSection()

    @model_validator(mode="after")
    def _check(self) -> EmbedConfig:
        if self.model.quantization != "none":
            raise ValueError("method embed trains without quantization: set quantization none")
        return self
