"""Configuration of sequence-classification fine-tuning (``method: classify``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tunesmith.config.sections import BaseRunConfig, LoraSection, Section


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
    eval_batch_size: int = Field(32, ge=1)


class ClassifyLoraSection(LoraSection):
    target_modules: str | list[str] | None = Field(  # type: ignore[assignment]
        None,
        description="None = peft's default for the architecture (BERT: query, value; Llama: "
        "q_proj, v_proj); `all-linear` = every linear layer but the head; a name, list or regex.",
    )


class ClassifyConfig(BaseRunConfig):
    """``data.train``/``data.validation`` are CSV/JSONL/... files of text and label;
    ``data.max_length`` truncates; ``data.val_fraction`` holds out part of train when no
    validation file is given."""

    method: Literal["classify"] = "classify"
    classify: ClassifySection = ClassifySection()
    lora: ClassifyLoraSection = ClassifyLoraSection()

    @model_validator(mode="after")
    def _check(self) -> ClassifyConfig:
        if self.model.quantization != "none":
            raise ValueError("method classify trains without quantization: set quantization none")
        if self.data.packing:
            raise ValueError("method classify does not pack examples: set data.packing false")
        return self
