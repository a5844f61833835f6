"""Per-sequence response log-probabilities, the quantity every preference loss works on.

A preference micro-batch of B pairs gives 2B sequence log-probabilities, chosen first: outputs
``0..B-1`` are ``log pi(chosen_i | prompt_i)`` and ``B..2B-1`` are ``log pi(rejected_i |
prompt_i)``, each summed over the response tokens (content and end-of-turn). Both sides go
through the model in a single forward pass, in one of the two layouts of
:mod:`tunesmith.data.pair_batches`: **padded** (2B right-padded rows, the prompt run twice) or
**shared prompt** (each prompt once with both replies after it, masked from each other), which
give the same log-probs up to float rounding. :class:`LogpsModule` is that forward as a module,
so DDP and FSDP see it.

Rounding: in fp32 the layouts agree to ~1e-5. Under bf16 a sequence's log-prob also depends on
what else is in its batch, by up to ~0.1 nats (measured on SmolLM2-135M, CPU): in both layouts
through the padded row width (kernels split their sums by tensor shape), and with packed
rows through the pair's offset and row-mates. So a reference precomputed in other batches than
the training step's is not bit-equal to the step-0 policy in bf16 (first-step DPO loss 0.69323
instead of log 2 = 0.69315 in ``benchmarks/compare_trl_dpo.py``). One pair per row is the
default: packing (``dpo.pack_pairs``) pays only when pair lengths in a micro-batch vary widely.

Precomputed reference log-probs (:func:`cached_reference`) live in the run dir, and a
checkpoint keeps their digest, so a resumed run trains against the very same numbers.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tunesmith.engine.distributed import DistInfo, barrier, broadcast_object
from tunesmith.engine.forward import decoder_hidden, forward_logits, head_parts
from tunesmith.engine.run import ResumeError
from tunesmith.engine.token_logps import head_logps, token_logps


def sequence_logps(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logps [2B] float32, lengths [2B])``: each sequence's log-probability summed over its
    response tokens, for a batch in either layout.

    Only the predicted positions go through the output head, in recomputed chunks, in float32
    (:func:`tunesmith.engine.token_logps.head_logps`).
    """
    if "owner" not in batch:
        logps, mask = token_logps(model, batch, chunk_size)  # [2B, T-1] each
        return logps.sum(dim=1), mask.sum(dim=1)
    src, tgt, owner, lengths = batch["src"], batch["tgt"], batch["owner"], batch["lengths"]
    parts = head_parts(model)
    if parts is None:
        logits = forward_logits(model, batch).flatten(0, 1)[src].float()  # [N, V]
        flat = torch.log_softmax(logits, dim=-1).gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
    else:
        decoder, head, softcap = parts
        hidden = decoder_hidden(decoder, model, batch)  # [R, T, H]
        flat = head_logps(head, softcap, hidden.flatten(0, 1)[src], tgt, chunk_size)
    sums = torch.zeros(lengths.shape, dtype=torch.float32, device=flat.device)
    return sums.index_add(0, owner, flat), lengths


class LogpsModule(torch.nn.Module):
    """``batch -> (logps [2B], lengths [2B])`` of :func:`sequence_logps` as a module, so that
    DDP and FSDP see the forward. ``adapter_off=True`` runs the peft model with its adapter
    disabled: the base model, an adapter run's reference, through the same (sharded) weights."""

    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def forward(
        self, batch: dict[str, torch.Tensor], adapter_off: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        off = self.model.disable_adapter() if adapter_off else contextlib.nullcontext()
        with off:
            return sequence_logps(self.model, batch)


def cache_digest(cache: dict[str, torch.Tensor]) -> str:
    """A bit-exact content hash of precomputed log-probs (``split -> tensor``)."""
    digest = hashlib.sha256()
    for split in sorted(cache):
        digest.update(split.encode())
        digest.update(cache[split].float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def cached_reference(
    path: Path,
    compute: Callable[[], dict[str, torch.Tensor]],
    expected: str | None,
    info: DistInfo,
) -> dict[str, torch.Tensor]:
    """Precomputed reference log-probs: read back from ``path``, or ``compute()``-d (every rank:
    the forwards may be collectives) and saved atomically by rank 0 when the file is missing or
    its :func:`cache_digest` differs from ``expected`` (the digest a resumed run's checkpoint
    holds). Still different after recomputing: the resume cannot be exact, so it is refused."""
    cache = None
    if broadcast_object(path.is_file(), info):  # rank 0 decides: every rank computes, or none
        cache = dict(torch.load(path, map_location="cpu", weights_only=True))
    if cache is None or (expected is not None and cache_digest(cache) != expected):
        if cache is not None and info.is_main:
            print(f"[tunesmith] {path.name} differs from the checkpoint's; recomputing", flush=True)
        cache = compute()
        if info.is_main:
            tmp = path.with_suffix(".tmp")
            torch.save(cache, tmp)
            os.replace(tmp, path)
        barrier(info)
    if expected is not None and (got := cache_digest(cache)) != expected:
        raise ResumeError(
            f"train.resume: the reference log-probs computed now ({got}) differ from those the "
            f"checkpoint was trained with ({expected}): the base model or its precision changed; "
            "start the run again without resume"
        )
    return cache
