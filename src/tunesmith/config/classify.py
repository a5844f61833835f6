"""Configuration of sequence-classification fine-tuning (``method: classify``).

The data and train sections are narrower than the shared ones: they hold only the fields
classify reads, so a field it would ignore (``data.packing``, ``data.template``,
``train.compile``...) is an error naming the field instead of a silent no-op.
"""

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


class ClassifySection(Section):
    mode: Literal["head", "top_k", "full", "lora"] = Field(
        "head",
        description="What trains: head = the classification head on a frozen backbone; top_k = "
        "the head and the top `top_k_layers` layers; full = everything; lora = LoRA adapters "
        "(peft SEQ_CLS) with the head trained in full (modules_to_save).",
    )
    top_k_layers: int = Field(2, ge=1, description="mode top_k: layers unfrozen from the top.")
    text_field: str = Field("text", description="Input text field (CSV column / JSON key).")
    label_field: str = Field("label", description="Label field: a string or an integer.")
    eval_batch_size: int = Field(32, ge=1, description="Held-out examples per forward (per rank).")
    cache_features: Literal["none", "memory", "disk"] = Field(
        "memory",
        description="modes head and top_k: run the frozen part once over every example (head: "
        "the whole backbone; top_k: the embeddings and the layers below the top `top_k_layers`) "
        "and train on what it gives (memory; disk: also under train.output_dir/.feature_cache, "
        "keyed by a content hash of data, model and max_length, reused by later runs); none: "
        "the backbone runs every step (its dropout active). Heads other than one linear layer, "
        "and top_k on layouts other than BERT-style encoders and Llama-style decoders, run "
        "uncached.",
    )

    @model_validator(mode="after")
    def _cache_is_for_frozen_parts(self) -> ClassifySection:
        if "cache_features" in self.model_fields_set and self.mode not in ("head", "top_k"):
            raise ValueError(
                f"classify.cache_features is read by classify.mode=head or top_k only "
                f"(got {self.mode})"
            )
        return self


class ClassifyLoraSection(LoraSection):
    target_modules: str | list[str] | None = Field(  # type: ignore[assignment]
        None,
        description="None = peft's default for the architecture (BERT: query, value; Llama: "
        "q_proj, v_proj); `all-linear` = every linear layer but the head; a name, list or regex.",
    )


class ClassifyDataSection(FileSplitFields):
    """Labelled text files and the held-out split (``data/split.py``'s one rule)."""

    train: list[str] = Field(
        ...,
        description="Labelled file(s): jsonl, json, csv, parquet or a `datasets` directory saved "
        "with save_to_disk; rows hold `classify.text_field` and `classify.label_field`.",
    )
    max_length: int = Field(512, ge=8, description="Tokens kept per text (longer ones are cut).")


class ClassifyTrainSection(EvalFields, ParallelFields, CheckpointingFields, BatchFields, RunFields):
    """The train fields classify reads (which layers train is ``classify.mode``); its held-out
    metric is macro-F1 (higher is better), the last step always evaluated."""


class ClassifyConfig(BaseRunConfig):
    """A classifier on a pretrained backbone; see ``docs/classify.md``."""

    method: Literal["classify"] = "classify"
    data: ClassifyDataSection  # type: ignore[assignment]
    train: ClassifyTrainSection = ClassifyTrainSection()  # type: ignore[assignment]
    classify: ClassifySection = ClassifySection()
    lora: ClassifyLoraSection = ClassifyLoraSection()

    @model_validator(mode="after")
    def _check(self) -> ClassifyConfig:
        if self.model.quantization != "none":
            raise ValueError("method classify trains without quantization: set quantization none")
        return self
