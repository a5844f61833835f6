"""Quantized frozen bases for QLoRA (NF4) and LLM.int8, through bitsandbytes.

QLoRA (Dettmers et al. 2023): the base weights are stored as 4-bit NormalFloat with
double-quantized block scales and dequantized on the fly in each matmul; only the LoRA adapters
(16/32-bit) train. bitsandbytes (>= 0.45) runs both NF4 and int8 on CPU as well as CUDA.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from tunesmith.models.load import ModelError

QUANTIZATIONS = ("none", "nf4", "int8")
NF4_CPU_BLOCK = 64  # bitsandbytes' CPU NF4 kernels need in_features to be a multiple of this
INSTALL_HINT = "pip install 'tunesmith[quant]' (bitsandbytes>=0.45)"
ADAPTER_MARKERS = ("lora_", "ia3_", "prompt_encoder", "prefix_encoder", "modules_to_save")


class QuantizationError(ModelError):
    """A quantization setting that cannot work here; says what can."""


def bnb_available() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def compute_dtype_for(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype NF4 weights are dequantized to for each matmul: bf16 on CUDA with bf16 support
    (the QLoRA paper's setting; fp32 would double the dequantized tiles and run slower), fp16 on
    older CUDA GPUs, else the load dtype (fp32 on CPU by default)."""
    if device.type != "cuda":
        return dtype
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def quantized_device_map(device: torch.device) -> dict[str, int | str]:
    """``device_map`` placing the whole quantized model on ``device`` while it loads (a
    bitsandbytes model cannot be moved after): a CUDA index (the current device for a bare
    ``cuda``, so each torchrun rank loads onto its own GPU), else the device's name."""
    if device.type == "cuda":
        return {"": device.index if device.index is not None else torch.cuda.current_device()}
    return {"": str(device)}


def quantization_config(
    kind: str, compute_dtype: torch.dtype, device: torch.device | None = None
) -> Any | None:
    """The transformers ``BitsAndBytesConfig`` for ``kind`` (None for ``none``); with a
    ``device``, the NF4 compute dtype is :func:`compute_dtype_for` that device.

    Raises :class:`QuantizationError` listing the choices when the backend is missing.
    """
    if kind == "none":
        return None
    if kind not in QUANTIZATIONS:
        raise QuantizationError(
            f"model.quantization={kind!r} is unknown (choices: {', '.join(QUANTIZATIONS)})"
        )
    if not bnb_available():
        raise QuantizationError(
            f"model.quantization={kind} needs bitsandbytes, which is not installed: "
            f"{INSTALL_HINT}; or choose model.quantization=none "
            f"(choices: {', '.join(QUANTIZATIONS)})"
        )
    from transformers import BitsAndBytesConfig

    if device is not None:
        compute_dtype = compute_dtype_for(compute_dtype, device)
    if kind == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def check_nf4_shapes(model_config: Any, device: torch.device) -> None:
    """On CPU, bitsandbytes' NF4 kernels need every quantized layer's input width to be a
    multiple of 64; say so before loading instead of failing inside the first forward."""
    if device.type != "cpu":
        return
    widths = {
        "hidden_size": getattr(model_config, "hidden_size", None),
        "intermediate_size": getattr(model_config, "intermediate_size", None),
    }
    bad = {k: v for k, v in widths.items() if isinstance(v, int) and v % NF4_CPU_BLOCK}
    if bad:
        raise QuantizationError(
            f"model.quantization=nf4 on CPU needs layer widths that are multiples of "
            f"{NF4_CPU_BLOCK}, but this model has {bad}; use model.quantization=int8 or none, "
            "or a GPU (choices: none, nf4, int8)"
        )


def prepare_quantized(model: Any, gradient_checkpointing: bool) -> Any:
    """peft's preparation of a quantized base for adapter training: every weight frozen,
    non-quantized parameters (norms, embeddings) in fp32, input gradients enabled."""
    from peft import prepare_model_for_kbit_training

    # peft would enable checkpointing through transformers' deprecated gradient_checkpointing_*
    # names; with use_reentrant=False that is all it does, so it is enabled here directly.
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if gradient_checkpointing:
        model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
    return model


def is_quantized(model: Any) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(base, "is_quantized", False) or getattr(base, "is_loaded_in_4bit", False))


def base_weight_bytes(model: torch.nn.Module) -> int:
    """Bytes held by the base model's parameters and buffers, as stored (packed 4-bit data
    counts half a byte per weight), adapters excluded, tied tensors counted once. Equals
    transformers' ``get_memory_footprint()`` for a bare model."""
    seen: set[int] = set()
    total = 0
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    for name, t in tensors:
        if id(t) in seen or any(m in name for m in ADAPTER_MARKERS):
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    return total
