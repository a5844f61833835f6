"""Configuration of supervised fine-tuning (``method: sft``)."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from tunesmith.config.sections import (
    PROMPT_LEARNING,
    AdapterRunConfig,
    ForgettingSection,
    RegularizationSection,
)


class SFTConfig(AdapterRunConfig):
    method: Literal["sft"] = "sft"
    forgetting: ForgettingSection | None = None
    regularization: RegularizationSection = RegularizationSection()

    @model_validator(mode="after")
    def _check_forgetting(self) -> SFTConfig:
        reg = self.regularization
        if (
            reg.type == "ewc"
            and reg.fisher_data is None
            and not (self.forgetting and self.forgetting.text)
        ):
            raise ValueError(
                "regularization.type=ewc needs regularization.fisher_data or "
                "forgetting.text (general text to estimate the Fisher on)"
            )
        return self

    @model_validator(mode="after")
    def _check_packing(self) -> SFTConfig:
        kind = self.adapter.type
        if self.data.packing and kind in PROMPT_LEARNING:
            raise ValueError(
                f"data.packing does not work with adapter.type={kind}: the virtual tokens sit "
                "in front of the whole row, so packed examples would share them; set "
                "data.packing=false"
            )
        return self
