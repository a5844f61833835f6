"""The model the worker thread owns: one base, its adapters, the tokenizer(s).

Adapters are loaded into one ``PeftModel`` (``load_adapter``); a batch names each row's adapter
(``adapter_names=``, ``"__base__"`` for the base), so rows for different adapters share every
forward pass. Only the worker thread calls :meth:`add`, :meth:`remove` and :meth:`forward`.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from tunesmith.data.records import Message
from tunesmith.data.templates import encode_prompt
from tunesmith.models.load import (
    load_causal_lm,
    load_dtype,
    load_tokenizer,
    pick_device,
    resolve_model,
)
from tunesmith.serve.adapters import BASE_ROW, adapter_dir, check_same_base
from tunesmith.serve.errors import APIError, bad_request
from tunesmith.serve.quantize import quantize_int8
from tunesmith.serve.settings import ServeSettings

CALIBRATION = (
    "Hello! How can I help you today?",
    "Explain how photosynthesis works in simple terms.",
    "def add(a, b):\n    return a + b",
    "The capital of France is Paris, and it is known for the Eiffel Tower.",
)


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
                    return encode_prompt(messages, tokenizer)
                except Exception as e:  # a template that rejects this conversation
                    raise bad_request(f"Cannot render the conversation: {e}", "messages") from None
            return list(tokenizer(prompt or "")["input_ids"])

    def decode(self, ids: list[int]) -> str:
        with self.lock:
            return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    # ------------------------------------------------------------------ adapters
    def add(self, name: str, path: Path) -> Path:
        weights = adapter_dir(path)
        check_same_base(weights, self.base_dir)
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
