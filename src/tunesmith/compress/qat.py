"""Quantization-aware training (QAT) with torchao: train through fake quantization, then save
the real quantized model.

During training every ``nn.Linear`` of the decoder blocks becomes torchao's
``FakeQuantizedLinear``: its forward quantizes and dequantizes the weight (int4 per group of
``group_size`` input channels, or int8 per output channel; symmetric) and the input activation
(int8 per token, asymmetric, dynamic), and gradients pass straight through the rounding (STE).
The network therefore learns weights that survive the rounding it will meet at inference
(Jacob et al. 2018; the int8-activation / int4-weight scheme of torchao and torchtune's QAT
recipes, Chen et al. 2024 "Quantization-aware training for large language models with PyTorch").

The embedding and the output head stay in float: they are tied in the small models we train, and
llama.cpp-style exports quantize them separately.

At the end two things are written: ``final/`` as usual (float weights, fake quantization removed:
it loads anywhere and feeds merge/export/GGUF), and ``final/quantized/``, the same weights with
the very quantization the fake quantizers simulated, applied by transformers' torchao
integration (``TorchAoConfig`` in its config.json), so ``AutoModelForCausalLM.from_pretrained``
returns int8/int4 weights whose logits equal the fake-quantized training model's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tunesmith.config.qat import QATSection

QUANTIZED_DIR = "quantized"


def base_config(qat: QATSection) -> Any:
    """The torchao post-training quantization config the fake quantizers simulate."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig
    from torchao.quantization.granularity import PerAxis, PerGroup

    if qat.weights == "int4":
        return Int8DynamicActivationIntxWeightConfig(
            weight_dtype=torch.int4, weight_granularity=PerGroup(qat.group_size)
        )
    return Int8DynamicActivationIntxWeightConfig(
        weight_dtype=torch.int8, weight_granularity=PerAxis(0)
    )


def _block_linear(module: torch.nn.Module, fqn: str) -> bool:
    """The linear layers inside decoder blocks (not the output head)."""
    return isinstance(module, torch.nn.Linear) and ".layers." in f".{fqn}."


def check_shapes(model: Any, qat: QATSection) -> None:
    """int4 groups must divide every block linear's input width."""
    if qat.weights != "int4":
        return
    from tunesmith.errors import UserError

    for name, module in model.named_modules():
        if _block_linear(module, name) and module.in_features % qat.group_size:
            raise UserError(
                f"train.qat.group_size={qat.group_size} does not divide {name}'s input width "
                f"{module.in_features}; pick a divisor (e.g. 32 or 64)"
            )


def prepare_qat(model: Any, qat: QATSection | None) -> Any:
    """``model`` with fake-quantized block linears (in place); unchanged when ``qat`` is None."""
    if qat is None:
        return model
    try:
        from torchao.quantization import quantize_
    except ImportError as e:
        from tunesmith.errors import UserError

        raise UserError("train.qat needs torchao: pip install 'tunesmith[quant]'") from e
    from torchao.quantization.qat import QATConfig

    check_shapes(model, qat)
    quantize_(model, QATConfig(base_config(qat), step="prepare"), filter_fn=_block_linear)
    return model


def save_quantized(float_dir: Path, out: Path, qat: QATSection) -> Path:
    """Load ``float_dir`` quantized exactly as QAT simulated it and save it at ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, TorchAoConfig

    qconfig = TorchAoConfig(base_config(qat), modules_to_not_convert=["lm_head"])
    model = AutoModelForCausalLM.from_pretrained(
        str(float_dir), dtype=torch.float32, quantization_config=qconfig
    )
    model.save_pretrained(str(out), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(float_dir)).save_pretrained(str(out))
    return out


def qat_export(qat: QATSection | None) -> Callable[[Path], None] | None:
    """The ``extra`` writer of ``Run.export_model``: adds ``quantized/`` to a full-model export."""
    if qat is None:
        return None

    def write(tmp: Path) -> None:
        save_quantized(tmp, tmp / QUANTIZED_DIR, qat)

    return write
