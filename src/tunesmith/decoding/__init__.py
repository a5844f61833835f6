"""One decoding engine for every caller: KV cache, stop strings and EOS, sampling with a seed per
row, per-row adapters, shared-prompt groups and continuous batching (:mod:`.engine`)."""

from tunesmith.decoding.engine import Engine, Forward, Request, Row, Update
from tunesmith.decoding.sampling import (
    SamplingParams,
    derive_seed,
    eos_ids,
    filter_logits,
    pick_tokens,
    pick_tokens_per_row,
    row_generators,
)
from tunesmith.decoding.text import TextStream

__all__ = [
    "Engine",
    "Forward",
    "Request",
    "Row",
    "SamplingParams",
    "TextStream",
    "Update",
    "derive_seed",
    "eos_ids",
    "filter_logits",
    "pick_tokens",
    "pick_tokens_per_row",
    "row_generators",
]
