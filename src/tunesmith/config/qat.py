"""``train.qat``: quantization-aware training (read by SFT; see :mod:`tunesmith.compress.qat`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tunesmith.config.sections import Section


class QATSection(Section):
    """``train.qat``: fake-quantized training, converted to a real quantized model at the end."""

    weights: Literal["int4", "int8"] = Field(
        "int4",
        description="Weight type of every decoder-block linear layer: int4 per group of "
        "group_size input channels, or int8 per output channel. Activations are int8 per token "
        "(dynamic) either way.",
    )
    group_size: int = Field(
        32, ge=1, description="int4: input channels sharing one scale (torchao's default is 32)."
    )
