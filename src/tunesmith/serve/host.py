"""The model the worker thread owns: one base, its adapters, the tokenizer(s).

Adapters are loaded into one ``PeftModel`` (``load_adapter``); a batch names each row's adapter
(``adapter_names=``, ``"__base__"`` for the base), so rows for different adapters share every
forward pass. Only the worker thread calls :meth:`add`, :meth:`remove` and :meth:`forward`.

Control tokens (the tokenizer's special tokens, such as ``<|im_end|>``) typed inside a chat
message are tokenized as plain text by default, so a user cannot close their turn and open a
``system`` one; ``allow_control_tokens`` honours them as the template's own.
"""

from __future__ import annotations

import re
import secrets
import threading
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from tunesmith.data.records import Message
from tunesmith.data.templates import encode_prompt, render_prompt
from tunesmith.models.load import (
    load_causal_lm,
    load_dtype,
    load_tokenizer,
    pick_device,
    resolve_model,
)
from tunesmith.serve.adapters import (
    BASE_ROW,
    adapter_dir,
    check_inside,
    check_name,
    check_same_base,
    shown,
)
from tunesmith.serve.errors import APIError, bad_request
from tunesmith.serve.quantize import quantize_int8
from tunesmith.serve.settings import ServeSettings

CALIBRATION = (
    "Hello! How can I help you today?",
    "Explain how photosynthesis works in simple terms.",
    "def add(a, b):\n    return a + b",
    "The capital of France is Paris, and it is known for the Eiffel Tower.",
)


def control_tokens(tokenizer: Any) -> list[str]:
    """The tokenizer's special-token strings, longest first (so a regex tries them in order)."""
    names = {str(t) for t in tokenizer.all_special_tokens}
    names |= {
        t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special
    }
    return sorted((n for n in names if n), key=len, reverse=True)


def encode_escaped(messages: list[Message], tokenizer: Any) -> list[int]:
    """Prompt ids like :func:`encode_prompt`, but a control token inside a message's content
    becomes the plain-text tokens of its characters (``split_special_tokens``).

    Each such occurrence is swapped for a placeholder before the template renders, and the text
    is tokenized piece by piece around the placeholders. A conversation without one is encoded
    exactly as :func:`encode_prompt` does.
    """
    specials = control_tokens(tokenizer)
    pattern = re.compile("|".join(map(re.escape, specials))) if specials else None
    if pattern is None or not any(pattern.search(m.content) for m in messages):
        return encode_prompt(messages, tokenizer)
    mark, found = f"\ue000{secrets.token_hex(8)}:", []

    def swap(match: re.Match[str]) -> str:
        found.append(match.group())
        return f"{mark}{len(found) - 1}\ue001"

    safe = [Message(role=m.role, content=pattern.sub(swap, m.content)) for m in messages]
    text = render_prompt(safe, tokenizer)
    bos = getattr(tokenizer, "bos_token", None)
    add_bos = not (bos and bos in text)  # as encode_prompt: BOS never doubled
    ids: list[int] = []
    for i, piece in enumerate(re.split(re.escape(mark) + "(\\d+)\ue001", text)):
        if i % 2:  # a placeholder's index: the control token's characters, as plain text
            literal = found[int(piece)]
            ids += tokenizer(literal, add_special_tokens=False, split_special_tokens=True)[
                "input_ids"
            ]
        elif piece or (i == 0 and add_bos):
            ids += tokenizer(piece, add_special_tokens=add_bos and i == 0)["input_ids"]
    return ids


class ModelHost:
    def __init__(self, settings: ServeSettings) -> None:
        self.base_dir = resolve_model(settings.base)
        self.base_name = settings.base_name or settings.base
        self.device = pick_device(settings.device)
        dtype = load_dtype(settings.dtype, self.device)
        self.model: Any = load_causal_lm(self.base_dir, dtype=dtype, device=self.device).eval()
        self.tokenizer = load_tokenizer(self.base_dir)
        self.prompt_tokenizers: dict[str, Any] = {self.base_name: self.tokenizer}
        self.adapters: dict[str, Path] = {}
        self.allow_control_tokens = settings.allow_control_tokens
        self.lock = threading.Lock()  # guards the tokenizers and the adapter tables
        for name, path in settings.adapters.items():
            self.add(name, path)
        if settings.quantize == "int8":
            self.model = quantize_int8(self.model, self._calibrate)

    @torch.no_grad()
    def _calibrate(self) -> None:
        """The base (adapters off) on a few ordinary prompts: activation ranges for int8."""
        off = getattr(self.model, "disable_adapter", None)
        with off() if off is not None else nullcontext():
            for text in CALIBRATION:
                try:
                    ids = self.encode(self.base_name, [Message(role="user", content=text)], None)
                except APIError:  # no chat template: plain text
                    ids = self.encode(self.base_name, None, text)
                self.model(input_ids=torch.tensor([ids], device=self.device))

    # ------------------------------------------------------------------ model ids
    def models(self) -> list[str]:
        with self.lock:
            return [self.base_name, *self.adapters]

    def has(self, name: str) -> bool:
        with self.lock:
            return name == self.base_name or name in self.adapters

    def encode(self, name: str, messages: list[Message] | None, prompt: str | None) -> list[int]:
        """Prompt ids with the chat template of the model asked for (an adapter's own when its
        run saved one)."""
        with self.lock:
            tokenizer = self.prompt_tokenizers.get(name, self.tokenizer)
            if messages is not None:
                try:
                    if self.allow_control_tokens:
                        return encode_prompt(messages, tokenizer)
                    return encode_escaped(messages, tokenizer)
                except Exception as e:  # a template that rejects this conversation
                    raise bad_request(f"Cannot render the conversation: {e}", "messages") from None
            return list(tokenizer(prompt or "")["input_ids"])

    def decode(self, ids: list[int]) -> str:
        with self.lock:
            return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    # ------------------------------------------------------------------ adapters
    def add(self, name: str, path: Path, root: Path | None = None) -> Path:
        """Load the adapter at ``path`` as ``name``. With ``root`` (a runtime addition), every
        entry of the adapter dir must resolve inside it and errors name paths relative to it."""
        check_name(name, set(self.models()))  # the app reserves names first; this guards others
        label = shown(root, path) if root is not None else str(path)
        weights = adapter_dir(path, label)
        if root is not None:
            check_inside(root, weights)
            label = shown(root, weights)
        check_same_base(weights, self.base_dir, label)
        from peft import PeftModel

        if isinstance(self.model, PeftModel):
            self.model.load_adapter(str(weights), adapter_name=name)
        else:
            self.model = PeftModel.from_pretrained(self.model, str(weights), adapter_name=name)
        self.model.set_adapter(name)
        self.model.eval()
        own = load_tokenizer(weights) if (weights / "tokenizer_config.json").is_file() else None
        with self.lock:
            self.adapters[name] = weights
            if own is not None:
                self.prompt_tokenizers[name] = own
        return weights

    def remove(self, name: str) -> None:
        with self.lock:
            self.adapters.pop(name)
            self.prompt_tokenizers.pop(name, None)
            remaining = list(self.adapters)
        self.model.delete_adapter(name)
        if not remaining:  # peft keeps a stale active adapter: go back to the plain base
            self.model = self.model.unload()
        else:
            self.model.set_adapter(remaining[-1])

    # ------------------------------------------------------------------ forward
    def forward(
        self, rows_models: list[str], **inputs: torch.Tensor | Any
    ) -> tuple[torch.Tensor, Any]:
        """Last-position logits [B, V] and the KV cache, each row through its own adapter."""
        extra: dict[str, Any] = {}
        if self.adapters:
            extra["adapter_names"] = [m if m in self.adapters else BASE_ROW for m in rows_models]
        out = self.model(**inputs, **extra, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :].float(), out.cache
