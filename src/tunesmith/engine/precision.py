"""Mixed precision: bf16 autocast where the hardware supports it, fp32 otherwise."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def resolve_precision(requested: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on CUDA devices with bf16 support, else ``fp32``."""
    if requested != "auto":
        return requested
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    if precision == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield
