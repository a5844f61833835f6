"""The model call shared by training and evaluation, for padded and packed batches."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from tunesmith.data.packing import block_causal_mask, flatten_rows
from tunesmith.engine.segment_attention import example_ids_mask, uses_segments
from tunesmith.losses.sft import IGNORE_INDEX, token_cross_entropy


def uses_flash_attention(model: Any) -> bool:
    """Whether the model runs a flash-attention kernel, which takes no 4-D mask."""
    config = getattr(model, "config", None)
    return "flash" in str(getattr(config, "_attn_implementation", ""))


def model_inputs(model: Any, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The keyword arguments for the model's forward.

    Padded batches carry a 2-D ``attention_mask``; packed batches carry ``position_ids`` that
    restart at every example and a 4-D block-diagonal boolean mask. Flash-attention kernels take
    no 4-D mask: they find the example boundaries from the restarting ``position_ids``
    (variable-length attention), which transformers reads only from a single row, so the packed
    rows are laid end to end as one row [1, B*T] (:func:`tunesmith.data.packing.flatten_rows`;
    :func:`restore_rows` gives the outputs back their [B, T] shape) and the mask is left out.
    Models mixing full and sliding-window layers get one mask per layer type. No KV cache is
    built (``use_cache=False``): a training or scoring forward never decodes on from it, and a
    cache would make ``torch.compile`` guard on each layer's cache state (one graph per layer).
    """
    kwargs: dict[str, Any] = {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "use_cache": False,
    }
    if "position_ids" in batch:
        kwargs["position_ids"] = batch["position_ids"]
        config = getattr(model, "config", None)
        branches = batch.get("branch_ids")
        if uses_segments(model) and branches is None and "seq_ids" in batch:
            # per-example causal SDPA, no T x T mask (tunesmith.engine.segment_attention)
            ids = example_ids_mask(batch["seq_ids"])
            sliding = "sliding_attention" in (getattr(config, "layer_types", None) or ())
            kwargs["attention_mask"] = (
                {"full_attention": ids, "sliding_attention": ids} if sliding else ids
            )
            return kwargs
        if uses_flash_attention(model):
            if branches is not None:
                raise ValueError("the shared-prompt layout needs a 4-D mask; flash takes none")
            if is_prompt_learning(model):
                raise ValueError("packing with flash attention cannot hold virtual tokens")
            return flatten_rows(batch["input_ids"], batch["position_ids"])
        elif "sliding_attention" in (getattr(config, "layer_types", None) or ()):
            # The sliding layers must keep their window inside each packed example.
            window = getattr(config, "sliding_window", None)
            positions = batch["position_ids"] if branches is not None else None
            kwargs["attention_mask"] = {
                "full_attention": batch["attention_mask"],
                "sliding_attention": block_causal_mask(
                    batch["seq_ids"], window, branches, positions
                ),
            }
        if getattr(config, "_attn_implementation", None) == "eager":
            kwargs["attention_mask"] = _additive(kwargs["attention_mask"], model)
    return kwargs


def _additive(mask: Any, model: Any) -> Any:
    """Eager attention ADDS a 4-D mask to its scores (a boolean one would add 0/1 and mask
    nothing), so it gets 0 where a key is visible and the dtype's minimum elsewhere."""
    if isinstance(mask, dict):
        return {k: _additive(v, model) for k, v in mask.items()}
    if mask.dtype != torch.bool:
        return mask
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
        ~mask, torch.finfo(dtype).min
    )


def restore_rows(out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """A model output for the flattened row [1, B*T, ...] back as [B, T, ...]; any other output
    as it is."""
    rows, length = batch["input_ids"].shape
    if out.size(0) == 1 and rows > 1 and out.size(1) == rows * length:
        return out.reshape(rows, length, *out.shape[2:])
    return out


def decoder_hidden(decoder: Any, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The decoder's last hidden states [B, T, H] for a collated batch (padded or packed)."""
    return restore_rows(decoder(**model_inputs(model, batch)).last_hidden_state, batch)


def is_prompt_learning(model: Any) -> bool:
    """A peft prefix/prompt-tuning model: its forward adds virtual tokens, so it must be called
    whole (the decoder alone would skip them)."""
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))


def forward_logits(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits [B, T, V] for a collated batch (padded or packed).

    Prompt tuning returns logits for the virtual tokens too ([B, n_virtual + T, V]); they come
    first and are dropped, so position t still predicts input token t + 1.
    """
    logits = restore_rows(model(**model_inputs(model, batch)).logits, batch)
    length = batch["input_ids"].size(1)
    return logits[:, -length:] if logits.size(1) > length else logits


# Causal LMs whose forward is exactly: decoder -> output head (-> final logit soft-cap). Others
# (logit scaling, extra heads) fall back to the full logits, which is always correct.
HEAD_ONLY_MODELS = frozenset(
    {
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "gemma",
        "gemma2",
        "gemma3_text",
        "phi3",
        "olmo2",
        "smollm3",
    }
)


def head_parts(model: Any) -> tuple[Any, Any, float | None] | None:
    """(decoder stack, output head, final logit soft-cap) of a causal LM, peft-wrapped or not;
    None when the model is not known to be exactly that."""
    if is_prompt_learning(model):
        return None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "model_type", None) not in HEAD_ONLY_MODELS:
        return None
    get_decoder = getattr(base, "get_decoder", None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    decoder = get_decoder() if get_decoder is not None else None
    if decoder is None or head is None or decoder is base:
        return None
    return decoder, head, getattr(base.config, "final_logit_softcapping", None)


def _chunk_loss(
    head: Any, softcap: float | None, hidden: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    logits = head(hidden).float()  # [n, V]
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits, targets, reduction="sum")


def forward_loss(
    model: Any, batch: dict[str, torch.Tensor], chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy and trained-token count, never materialising the full
    [B, T, V] logits.

    The decoder gives hidden states [B, T, H]; only the N positions whose next token is trained
    go through the output head, ``chunk_size`` rows at a time, and each chunk's logits [n, V]
    are recomputed in the backward pass instead of being kept (activation checkpointing). Same
    value as :func:`tunesmith.losses.sft.token_cross_entropy` on the full logits.
    """
    parts = head_parts(model)
    if parts is None:
        return token_cross_entropy(forward_logits(model, batch), batch["labels"])
    decoder, head, softcap = parts
    hidden = decoder_hidden(decoder, model, batch)  # [B, T, H]
    targets = batch["labels"][:, 1:]  # [B, T-1]
    keep = targets != IGNORE_INDEX
    rows, goal = hidden[:, :-1][keep], targets[keep]  # [N, H], [N]
    total = hidden[:1, :1, :1].sum().float() * 0.0  # in the graph even when N = 0
    for start in range(0, rows.size(0), chunk_size):
        h, t = rows[start : start + chunk_size], goal[start : start + chunk_size]
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_loss, head, softcap, h, t, use_reentrant=False)
        else:
            total = total + _chunk_loss(head, softcap, h, t)
    return total, keep.sum()
