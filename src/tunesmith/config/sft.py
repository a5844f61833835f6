"""Configuration of supervised fine-tuning (``method: sft``)."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from tunesmith.config.qat import QATSection
from tunesmith.config.sections import (
    PROMPT_LEARNING,
    AdapterRunConfig,
    ForgettingSection,
    RegularizationSection,
    TrainSection,
)


class SFTTrainSection(TrainSection):
    """SFT's train section: every shared group, and quantization-aware training."""

    qat: QATSection | None = None


class SFTConfig(AdapterRunConfig):
    method: Literal["sft"] = "sft"
    train: SFTTrainSection = SFTTrainSection()
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
    def _check_qat(self) -> SFTConfig:
        if self.train.qat is not None and (
            self.adapter.type != "full" or self.model.quantization != "none"
        ):
            raise ValueError(
                "train.qat fake-quantizes the weights that train: it needs adapter.type=full "
                f"and model.quantization=none (got adapter.type={self.adapter.type}, "
                f"model.quantization={self.model.quantization})"
            )
        if self.train.qat is not None and self.train.parallel == "fsdp":
            raise ValueError(
                "train.qat with train.parallel=fsdp is not supported (torchao's fake quantizers "
                "are not tested on sharded weights); use train.parallel=ddp"
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
