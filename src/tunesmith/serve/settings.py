"""What the server is configured with: model, adapters, limits, batching and auth."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Limits:
    """Per-request limits; over a limit is a 400 (413 for the body), never a crash."""

    max_prompt_tokens: int = 2048
    max_new_tokens: int = 512
    default_max_tokens: int = 128
    max_body_bytes: int = 1_000_000
    request_timeout_s: float = 120.0
    # Requests waiting for a batch before a 429; None: 4 x max_batch_size. Fewer are admitted
    # when the measured batch time says they would not finish within request_timeout_s.
    max_queue: int | None = None


@dataclass(frozen=True)
class Batching:
    """``max_batch_size``: the engine's slots (rows decoding together; a new request joins
    the running batch at the next step). ``window_ms`` is read only by the old windowed
    batcher kept as the baseline in ``benchmarks/serve_throughput.py``."""

    window_ms: float = 10.0
    max_batch_size: int = 16


@dataclass(frozen=True)
class ServeSettings:
    base: str
    adapters: dict[str, Path] = field(default_factory=dict)
    adapter_root: Path | None = None
    base_name: str | None = None  # the model id of the base; default: the --base argument
    api_key: str | None = None
    quantize: str = "none"  # none | int8
    device: str = "auto"
    dtype: str = "auto"
    # Special tokens typed in chat content (``<|im_end|>``...) are plain text unless this is on.
    allow_control_tokens: bool = False
    limits: Limits = field(default_factory=Limits)
    batching: Batching = field(default_factory=Batching)
    # Sentence encoders served at /v1/embeddings (serve/embeddings.py), by model id.
    embedders: dict[str, Path] = field(default_factory=dict)
