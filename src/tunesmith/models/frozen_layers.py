"""Frozen lower layers for top-k classification: their output computed once, the top layers
trained on it.

With ``classify.mode: top_k`` the embeddings and the layers below the first trained one
(index ``L - k`` of ``L``) never change, and in eval mode (dropout off) they map an example to
the same hidden states at every step. :func:`lower_states` runs the backbone once over every
example up to layer ``L - k`` (a forward pre-hook takes the layer's input and stops the forward
there) and keeps, per example, its ``[T_i, H]`` hidden states (real tokens only: with right
padding and the attention mask, the states of real tokens do not depend on the padding).

:class:`UpperStack` is then the step: the trained layers, the final norm and the head over a
micro-batch of those states, rebuilding what the backbone's forward hands its layers:

* encoder (BERT / MiniLM; ``bert.encoder.layer``, ``bert.pooler``, ``dropout`` +
  ``classifier``): the padding mask from :func:`transformers.masking_utils.
  create_bidirectional_mask`; absolute positions were added by the embeddings, below the cut;
* decoder (Llama-style ``model.layers``, ``model.norm``, ``model.rotary_emb``; ``score``):
  ``position_ids = 0..T-1`` (right padding), the causal + padding mask from
  ``create_causal_mask`` and the rotary ``(cos, sin)`` from ``rotary_emb``, as the model's own
  forward builds them; the logits are pooled at each example's last token, as transformers pools
  at the last non-pad token (texts hold no pad token: ``check_pad_free``).

:func:`upper_stack` returns None for any other layout, and :func:`matches_model` compares the
stack with the full model on a few examples before a run relies on it (an architecture whose
layers want other inputs, such as Gemma 3's sliding-window masks, then runs live).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

Encoded = Sequence[tuple[list[int], int]]


@dataclass
class LayerFeatures:
    """Hidden states entering the first trained layer: example ``i`` is
    ``states[offsets[i]:offsets[i+1]]`` ([T_i, H], float32, CPU)."""

    states: torch.Tensor  # [sum_i T_i, H]
    offsets: torch.Tensor  # [N + 1], long

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def batch(self, idx: Sequence[int]) -> dict[str, torch.Tensor]:
        """``states`` [B, T, H] zero-padded on the right and ``attention_mask`` [B, T]."""
        blocks = [self.states[self.offsets[i] : self.offsets[i + 1]] for i in idx]
        width = max(len(b) for b in blocks)
        states = self.states.new_zeros(len(blocks), width, self.states.shape[-1])
        mask = torch.zeros(len(blocks), width, dtype=torch.long)
        for row, block in enumerate(blocks):
            states[row, : len(block)] = block
            mask[row, : len(block)] = 1
        return {"states": states, "attention_mask": mask}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"states": self.states.contiguous(), "offsets": self.offsets.contiguous()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> LayerFeatures:
        return cls(tensors["states"], tensors["offsets"])


def _layers(model: Any, is_decoder: bool) -> Any:
    base = getattr(model, model.base_model_prefix)
    return base.layers if is_decoder else base.encoder.layer


class UpperStack(torch.nn.Module):
    """``batch -> logits [B, K]`` from cached states ``batch["states"]`` [B, T, H] and
    ``batch["attention_mask"]`` [B, T]: layers ``first..L-1``, final norm / pooler and head."""

    def __init__(self, model: Any, first: int, is_decoder: bool):
        super().__init__()
        self.model = model
        self.first = first
        self.is_decoder = is_decoder

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden, mask = batch["states"], batch["attention_mask"]
        if self.is_decoder:
            return self._decoder(hidden, mask)
        return self._encoder(hidden, mask)

    def _encoder(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        bert = getattr(self.model, self.model.base_model_prefix)
        attn = create_bidirectional_mask(
            config=bert.config, inputs_embeds=hidden, attention_mask=mask
        )
        for layer in bert.encoder.layer[self.first :]:
            hidden = layer(hidden, attn)
        pooled = bert.pooler(hidden)  # tanh(W h[:, 0] + b)
        return self.model.classifier(self.model.dropout(pooled))  # type: ignore[no-any-return]

    def _decoder(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from transformers.masking_utils import create_causal_mask

        base = getattr(self.model, self.model.base_model_prefix)
        positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)  # [1, T]
        causal = create_causal_mask(
            config=base.config,
            inputs_embeds=hidden,
            attention_mask=mask,
            cache=None,
            position_ids=positions,
        )
        rotary = base.rotary_emb(hidden, position_ids=positions)  # (cos, sin)
        for layer in base.layers[self.first : base.config.num_hidden_layers]:
            hidden = layer(
                hidden, attention_mask=causal, position_embeddings=rotary, position_ids=positions
            )
        logits = self.model.score(base.norm(hidden))  # [B, T, K]
        last = mask.sum(-1) - 1  # right padding: the last real token
        return logits[torch.arange(len(logits), device=logits.device), last]  # type: ignore[no-any-return]


def upper_stack(model: Any, top_k: int, is_decoder: bool) -> UpperStack | None:
    """The trained top of ``model`` as an :class:`UpperStack`, or None when its layout is not
    one this module rebuilds (then the run trains on the live backbone)."""
    base = getattr(model, model.base_model_prefix, None)
    if base is None:
        return None
    if is_decoder:
        layout = all(hasattr(base, a) for a in ("layers", "norm", "rotary_emb"))
        layout = layout and isinstance(getattr(model, "score", None), torch.nn.Linear)
    else:
        encoder = getattr(base, "encoder", None)
        layout = hasattr(encoder, "layer") and getattr(base, "pooler", None) is not None
        layout = layout and isinstance(getattr(model, "classifier", None), torch.nn.Linear)
        layout = layout and isinstance(getattr(model, "dropout", None), torch.nn.Dropout)
    if not layout:
        return None
    first = int(model.config.num_hidden_layers) - top_k
    return UpperStack(model, first, is_decoder) if first >= 0 else None


class _Stop(Exception):
    """Raised by the capture hook: the layers above the cut need not run."""


@torch.no_grad()
def lower_states(
    model: Any,
    encoded: Encoded,
    pad_id: int,
    batch_size: int,
    first: int,
    is_decoder: bool,
    collate: Any,
) -> LayerFeatures:
    """The input of layer ``first`` for every example, in order (eval mode, no grad)."""
    device = next(model.parameters()).device
    captured: list[torch.Tensor] = []

    def grab(_: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        captured.append((args[0] if args else kwargs["hidden_states"]).detach())
        raise _Stop

    was_training = model.training
    model.eval()
    handle = _layers(model, is_decoder)[first].register_forward_pre_hook(grab, with_kwargs=True)
    blocks: list[torch.Tensor] = []
    try:
        for start in range(0, len(encoded), batch_size):
            items = list(encoded[start : start + batch_size])
            batch = {k: v.to(device) for k, v in collate(items, pad_id).items()}
            captured.clear()
            with contextlib.suppress(_Stop):
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            states = captured[0].float().cpu()  # [B, T, H]
            blocks += [states[row, : len(ids)] for row, (ids, _) in enumerate(items)]
    finally:
        handle.remove()
        model.train(was_training)
    lengths = torch.tensor([0] + [len(b) for b in blocks], dtype=torch.long)
    hidden = int(model.config.hidden_size)
    states = torch.cat(blocks) if blocks else torch.zeros(0, hidden)
    return LayerFeatures(states, lengths.cumsum(0))


@torch.no_grad()
def matches_model(
    model: Any,
    stack: UpperStack,
    features: LayerFeatures,
    encoded: Encoded,
    pad_id: int,
    collate: Any,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> bool:
    """Whether the stack on the cached states gives the full model's logits (eval mode) on the
    first few examples: the guard against a layout whose layers want other inputs."""
    n = min(4, len(encoded))
    if n == 0:
        return True
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        batch = {k: v.to(device) for k, v in collate(list(encoded[:n]), pad_id).items()}
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        cached = stack({k: v.to(device) for k, v in features.batch(range(n)).items()})
    except (TypeError, ValueError, RuntimeError, AttributeError, KeyError, IndexError):
        return False  # layers that want other inputs (Gemma 3: a rotary embedding per layer type)
    finally:
        model.train(was_training)
    return bool(torch.allclose(full.float(), cached.float(), atol=atol, rtol=rtol))


__all__ = ["LayerFeatures", "UpperStack", "lower_states", "matches_model", "upper_stack"]
