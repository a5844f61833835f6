"""``train.compile``: torch.compile applied per decoder layer (regional compilation).

Compiling each transformer block instead of the whole model compiles one block's graph once and
reuses it for every layer (they share code), so the first step costs far less compile time, and
the loss code around the blocks (chunked cross-entropy over trained positions only) stays eager.

Two shape modes (``train.compile``):

* ``dynamic`` (what ``true`` means): one graph with symbolic sizes, so padded and packed
  batches of any shape reuse it;
* ``static``: a graph per input shape (``dynamic=False``). Packed rows are padded to bucket
  widths (:func:`tunesmith.data.packing.bucket_width`: at most 8 widths per doubling), so each
  (rows, width) bucket compiles once and later steps reuse its specialised graph. Dynamo's
  per-function recompile limit (8 by default, after which it silently runs eagerly) is raised
  to :data:`STATIC_RECOMPILE_LIMIT` so that every bucket a run meets gets its graph.

``benchmarks/levers.py`` measures both against eager (variants ``compile-static`` and
``compile-dynamic``); ``true`` stays dynamic until a quiet-machine run shows static winning.
"""

from __future__ import annotations

from typing import Any

from tunesmith.engine.distributed import decoder_layers

STATIC_RECOMPILE_LIMIT = 64  # shapes per compiled function: buckets x distinct row counts


def compile_layers(model: Any, mode: bool | str = True) -> int:
    """Compile every decoder layer of ``model`` in place (``mode``: ``True``/``"dynamic"`` or
    ``"static"``, see the module docstring); returns how many were compiled."""
    if mode not in (True, "dynamic", "static"):
        raise ValueError(f"compile mode must be true, 'dynamic' or 'static', got {mode!r}")
    dynamic = mode != "static"
    if not dynamic:
        _allow_recompiles(STATIC_RECOMPILE_LIMIT)
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile(dynamic=dynamic)
    return len(layers)


def _allow_recompiles(limit: int) -> None:
    """Let dynamo keep ``limit`` graphs per function (never lowers a larger setting)."""
    import torch._dynamo.config as dynamo

    name = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"
    setattr(dynamo, name, max(getattr(dynamo, name), limit))
    dynamo.accumulated_recompile_limit = max(dynamo.accumulated_recompile_limit, limit * 4)
