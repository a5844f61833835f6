"""Per-token log-probabilities of sampled completions, the quantity policy-gradient losses use.

A batch holds ``prompt + completion`` rows, right-padded: ``input_ids``/``attention_mask`` [B, T]
and ``labels`` [B, T] with the completion tokens and :data:`IGNORE_INDEX` elsewhere
(:func:`tunesmith.data.completion_batches.collate_completions` builds it). Position t
predicts token t + 1, so the outputs are [B, T-1]: ``logp[b, t] = log pi(input_ids[b, t+1] |
input_ids[b, :t+1])`` where ``mask[b, t]`` is 1 (the label at t + 1 is a completion token), 0
elsewhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from tunesmith.engine.forward import decoder_hidden, forward_logits, head_parts
from tunesmith.losses.sft import IGNORE_INDEX


def _chunk(
    head: torch.nn.Module, softcap: float | None, hidden: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    logits = head(hidden).float()
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    return -F.cross_entropy(logits, targets, reduction="none")


def head_logps(
    head: torch.nn.Module,
    softcap: float | None,
    rows: torch.Tensor,
    goal: torch.Tensor,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """``log softmax(head(rows))[goal]`` [N] float32 for hidden states ``rows`` [N, H] and target
    ids ``goal`` [N], ``chunk_size`` rows at a time; under grad each chunk's [n, V] logits are
    recomputed in the backward pass instead of kept."""
    pieces = []
    for start in range(0, rows.size(0), chunk_size):
        h, t = rows[start : start + chunk_size], goal[start : start + chunk_size]
        if torch.is_grad_enabled():
            pieces.append(checkpoint(_chunk, head, softcap, h, t, use_reentrant=False))
        else:
            pieces.append(_chunk(head, softcap, h, t))
    return torch.cat(pieces) if pieces else rows.new_zeros(0, dtype=torch.float32)


def token_logps(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logps [B, T-1] float32, mask [B, T-1])`` of the labelled tokens (see module docstring).

    For a plain decoder + head only the labelled positions go through the head, ``chunk_size``
    at a time (recomputed in the backward pass), so the [B, T, V] logits are never held."""
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    parts = head_parts(model)
    if parts is None:
        logits = forward_logits(model, batch)[:, :-1].float()
        logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1))
        return logp.squeeze(-1) * keep, keep
    decoder, head, softcap = parts
    hidden = decoder_hidden(decoder, model, batch)[:, :-1]
    flat = head_logps(head, softcap, hidden[keep], targets[keep], chunk_size)
    out = torch.zeros(keep.shape, dtype=torch.float32, device=hidden.device)
    out[keep] = flat
    return out, keep
