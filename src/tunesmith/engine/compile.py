"""``train.compile``: torch.compile applied per decoder layer (regional compilation).

Compiling each transformer block instead of the whole model compiles one block's graph once and
reuses it for every layer (they share code), so the first step costs far less compile time, and
the loss code around the blocks (chunked cross-entropy over trained positions only) stays eager.
``dynamic=True`` because packed and padded batches change shape from step to step.
"""

from __future__ import annotations

from typing import Any

from tunesmith.engine.distributed import decoder_layers


def compile_layers(model: Any) -> int:
    """Compile every decoder layer of ``model`` in place; returns how many were compiled."""
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)
