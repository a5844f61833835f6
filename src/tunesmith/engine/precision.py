"""Mixed precision: bf16 autocast where the hardware supports it, fp32 otherwise.

Weights that train are held in fp32 (the "master weights") and so is the optimizer state; bf16
autocast runs the matmuls in bf16. With ``model.dtype: auto`` a model is therefore loaded in
fp32 whenever any of its own weights train (full fine-tuning, top layers, a classifier or reward
head), also on CUDA. Under LoRA / QLoRA the frozen base is stored in bf16 wherever bf16 is native
(CUDA, and CPUs with AVX-512 BF16 / AMX when ``train.precision`` resolves to bf16): half the
memory, frozen weights get no update to lose, and autocast has nothing to re-cast on every
forward (an fp32 frozen weight is cast to bf16 anew in each step). peft keeps the adapter weights
and so the optimizer state in fp32 (``autocast_adapter_dtype``). Pure
bf16 weights (AdamW updates rounded to bf16) are an explicit choice: ``model.dtype: bfloat16``.
fp16 training is refused at config load (no loss scaler): see ``config.sections.ModelSection``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import torch


@functools.cache
def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 dot products (AVX-512 BF16 or AMX), read from
    /proc/cpuinfo; without them bf16 autocast on CPU is emulated and slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(requested: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on CUDA devices with bf16 support and on CPUs with native bf16,
    else ``fp32``."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"


def frozen_base_bf16(device: torch.device, precision: str | None) -> bool:
    """Whether a frozen base (only adapters train) is stored in bf16 under ``model.dtype: auto``:
    always on CUDA, on CPU when bf16 is native and the run's resolved precision is bf16."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and precision == "bf16" and cpu_has_bf16()


def weight_dtype(
    name: str, device: torch.device, *, base_trains: bool, precision: str | None = None
) -> torch.dtype:
    """The dtype a model that is about to train is loaded in.

    ``auto``: fp32 when ``base_trains`` (some of the loaded model's own weights get optimizer
    updates); bf16 when only adapters train on a frozen base and :func:`frozen_base_bf16` holds
    (``precision`` is the run's resolved ``train.precision``); fp32 otherwise. An explicit
    ``float32`` / ``bfloat16`` / ``float16`` is taken as given (``bfloat16``: pure-bf16 weights).
    """
    if name == "auto":
        if not base_trains and frozen_base_bf16(device, precision):
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """bf16 autocast (weights and optimizer state stay fp32) or nothing."""
    if precision == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield
