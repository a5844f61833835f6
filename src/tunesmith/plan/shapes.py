"""Llama-family decoder shapes: named sizes, or read from a model's ``config.json``.

A decoder layer of the Llama family holds (hidden ``h``, intermediate ``i``, ``a`` query heads,
``k`` key/value heads, head dim ``d = h / a``):

    attention  q_proj h x h, k_proj h x kd, v_proj h x kd, o_proj h x h
    MLP        gate_proj h x i, up_proj h x i, down_proj i x h   (SwiGLU)
    norms      2 x h (RMSNorm scales)

plus the token embedding ``V x h``, a final norm ``h`` and the output head ``V x h`` unless it is
tied to the embedding. Llama-2-7B: 32 x 202,383,360 + 2 x 32000 x 4096 + 4096 = 6,738,415,616.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tunesmith.errors import UserError


class PlanError(UserError):
    """A model or setting the planner cannot work with."""


@dataclass(frozen=True)
class ModelShape:
    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool

    @property
    def kv_hidden(self) -> int:
        return self.kv_heads * (self.hidden // self.heads)

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each linear layer of one decoder layer."""
        h, i, kv = self.hidden, self.intermediate, self.kv_hidden
        return {
            "q_proj": (h, h),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (h, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def layer_linear_params(self) -> int:
        return sum(a * b for a, b in self.linear_shapes().values())

    @property
    def layer_params(self) -> int:
        return self.layer_linear_params + 2 * self.hidden

    @property
    def embedding_params(self) -> int:
        """Token embedding plus the output head when it is not tied."""
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def params(self) -> int:
        return self.layers * self.layer_params + self.embedding_params + self.hidden


# Published shapes. 1B/3B: Llama-3.2; 8B: Llama-3.1; 7B/13B: Llama-2; 34B: Code Llama 34B;
# 65B: LLaMA-1 (the QLoRA paper's model); 70B: Llama-2-70B.
NAMED_SHAPES: dict[str, ModelShape] = {
    "1B": ModelShape("1B (Llama-3.2-1B)", 16, 2048, 8192, 32, 8, 128256, True),
    "3B": ModelShape("3B (Llama-3.2-3B)", 28, 3072, 8192, 24, 8, 128256, True),
    "7B": ModelShape("7B (Llama-2-7B)", 32, 4096, 11008, 32, 32, 32000, False),
    "8B": ModelShape("8B (Llama-3.1-8B)", 32, 4096, 14336, 32, 8, 128256, False),
    "13B": ModelShape("13B (Llama-2-13B)", 40, 5120, 13824, 40, 40, 32000, False),
    "34B": ModelShape("34B (Code Llama 34B)", 48, 8192, 22016, 64, 8, 32000, False),
    "65B": ModelShape("65B (LLaMA-65B)", 80, 8192, 22016, 64, 64, 32000, False),
    "70B": ModelShape("70B (Llama-2-70B)", 80, 8192, 28672, 64, 8, 32000, False),
}


def shape_from_config(config: dict[str, object], name: str) -> ModelShape:
    """The shape of a Llama-style decoder from its HF ``config.json`` fields."""
    try:
        heads = int(config["num_attention_heads"])  # type: ignore[call-overload]
        return ModelShape(
            name=name,
            layers=int(config["num_hidden_layers"]),  # type: ignore[call-overload]
            hidden=int(config["hidden_size"]),  # type: ignore[call-overload]
            intermediate=int(config["intermediate_size"]),  # type: ignore[call-overload]
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),  # type: ignore[call-overload]
            vocab=int(config["vocab_size"]),  # type: ignore[call-overload]
            tied=bool(config.get("tie_word_embeddings", False)),
        )
    except KeyError as e:
        raise PlanError(
            f"{name}: config.json has no {e.args[0]}; the planner needs a Llama-style decoder "
            "(num_hidden_layers, hidden_size, intermediate_size, num_attention_heads, vocab_size)"
        ) from None


def _model_dir(spec: str) -> Path:
    """A model directory for a path, a run dir (its base model) or a tunesmith alias."""
    path = Path(spec).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        from tunesmith.engine.rundir import saved_setting

        base = saved_setting(path, "model.name_or_path")
        if base is not None:
            return _model_dir(str(base))
    from tunesmith.models.load import resolve_model

    return resolve_model(spec)


def resolve_shape(spec: str) -> ModelShape:
    """A named size (``7B``), a model directory, a run directory or a model alias."""
    named = NAMED_SHAPES.get(spec.upper())
    if named is not None:
        return named
    path = _model_dir(spec)
    config = json.loads((path / "config.json").read_text())
    return shape_from_config(config, spec)
