"""Choosing what trains: peft adapters (LoRA, rsLoRA, DoRA, prefix tuning, prompt tuning,
(IA)3), full fine-tuning, or only the top N layers.

Every adapter type is one peft config built from its own config section; ``adapter.type``
selects it. Targets and ranks are checked against the model before peft sees them, so a typo
or a rank larger than a layer is an error that lists what the model has.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import torch

from tunesmith.config import LoraSection
from tunesmith.models.load import ModelError

if TYPE_CHECKING:
    from tunesmith.config import AdapterRunConfig

LORA_PRESETS: dict[str, str | list[str]] = {
    "attention": ["q_proj", "v_proj"],
    "all-linear": "all-linear",  # peft's own preset: every nn.Linear but the output head
}
_NAME = re.compile(r"[A-Za-z0-9_]+")


class AdapterError(ModelError):
    """An adapter setting that does not fit the model; names the valid choices."""


def lora_targets(spec: str | list[str]) -> str | list[str]:
    """peft's ``target_modules`` for a config value: a preset, a list of module names, a single
    name (a plain identifier), or else a regex matched against full module names."""
    if isinstance(spec, str):
        if spec in LORA_PRESETS:
            return LORA_PRESETS[spec]
        return [spec] if _NAME.fullmatch(spec) else spec
    return list(spec)


def _output_head(model: Any) -> Any:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    get = getattr(base, "get_output_embeddings", None)
    return get() if get is not None else None


def linear_modules(model: Any) -> dict[str, torch.nn.Linear]:
    """Every ``nn.Linear`` of the model (quantized ones included) but the output head."""
    head = _output_head(model)
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and m is not head
    }


def match_targets(model: Any, targets: str | list[str], field: str) -> dict[str, Any]:
    """The linear modules ``targets`` selects, as peft would (a str: regex full match on the
    module name, or ``all-linear``; a list: exact name or dotted suffix). None matched: an
    :class:`AdapterError` listing the model's linear module names."""
    linears = linear_modules(model)
    if targets == "all-linear":
        found = linears
    elif isinstance(targets, str):
        found = {n: m for n, m in linears.items() if re.fullmatch(targets, n)}
    else:
        found = {
            n: m for n, m in linears.items() if any(n == t or n.endswith(f".{t}") for t in targets)
        }
    if not found:
        names = sorted({n.rsplit(".", 1)[-1] for n in linears})
        raise AdapterError(
            f"{field}={targets!r} matches no module of this model; its linear modules are "
            f"{', '.join(names)} (or use the presets: {', '.join(LORA_PRESETS)})"
        )
    return found


def check_rank(targets: dict[str, Any], r: int) -> None:
    """LoRA's rank cannot exceed min(d_in, d_out) of a matrix it adapts."""
    too_small = {n: min(m.in_features, m.out_features) for n, m in targets.items()}
    bad = {n: d for n, d in too_small.items() if r > d}
    if bad:
        limit = min(bad.values())
        name = next(n for n, d in bad.items() if d == limit)
        raise AdapterError(
            f"lora.r={r} is larger than layer {name} allows (min(d_in, d_out) = {limit}); "
            f"choose lora.r <= {limit}, or target modules without such small layers"
        )


def attach_lora(model: Any, cfg: LoraSection, kind: str = "lora") -> Any:
    """Wrap ``model`` with LoRA adapters; the base weights are frozen by peft.

    LoRA (Hu et al. 2021): W x + (alpha / r) * B A x with A [r, d_in] random, B [d_out, r] zero,
    so training starts exactly at the base model. rsLoRA (Kalajdzievski 2023) scales by
    alpha / sqrt(r); DoRA (Liu et al. 2024) splits W into a trained magnitude and a direction
    that LoRA updates.
    """
    from peft import get_peft_model

    targets = lora_targets(cfg.target_modules)
    check_rank(match_targets(model, targets, "lora.target_modules"), cfg.r)
    return get_peft_model(model, lora_config(cfg, kind, targets, "CAUSAL_LM"))


def _peft_config(cfg: AdapterRunConfig, model: Any, model_path: str) -> Any:
    """The peft config of a non-LoRA adapter type."""
    from peft import IA3Config, PrefixTuningConfig, PromptTuningConfig

    kind = cfg.adapter.type
    if kind == "prefix":
        return PrefixTuningConfig(
            num_virtual_tokens=cfg.prefix.num_virtual_tokens, task_type="CAUSAL_LM"
        )
    if kind == "prompt":
        text = cfg.prompt.init_text
        return PromptTuningConfig(
            num_virtual_tokens=cfg.prompt.num_virtual_tokens,
            prompt_tuning_init="TEXT" if text else "RANDOM",
            prompt_tuning_init_text=text,
            tokenizer_name_or_path=model_path if text else None,
            task_type="CAUSAL_LM",
        )
    if kind == "ia3":
        targets = cfg.ia3.target_modules
        ff = cfg.ia3.feedforward_modules
        if targets is not None:
            targets = lora_targets(targets)
            match_targets(model, targets, "ia3.target_modules")
        ff = lora_targets(ff) if ff is not None else None
        return IA3Config(target_modules=targets, feedforward_modules=ff, task_type="CAUSAL_LM")
    raise AdapterError(f"adapter.type={kind} is not a peft adapter")


def attach_adapter(model: Any, cfg: AdapterRunConfig, model_path: str) -> Any:
    """Wrap ``model`` with the peft adapter ``cfg.adapter.type`` selects (not ``full``)."""
    kind = cfg.adapter.type
    if kind in ("lora", "rslora", "dora"):
        return attach_lora(model, cfg.lora, kind)
    from peft import get_peft_model

    try:
        return get_peft_model(model, _peft_config(cfg, model, model_path))
    except ValueError as e:  # e.g. ia3 feedforward_modules not a subset of target_modules
        raise AdapterError(f"adapter.type={kind}: {e}") from None


def _decoder_layer_count(model: Any) -> int:
    n = getattr(model.config, "num_hidden_layers", None)
    if n is None:
        raise ValueError("train.trainable_top_layers: the model config has no num_hidden_layers")
    return int(n)


def freeze_all_but_top(model: Any, top: int) -> None:
    """Train only the top ``top`` decoder layers and the final norm (transfer-learning style)."""
    n_layers = _decoder_layer_count(model)
    if top > n_layers:
        raise ValueError(f"train.trainable_top_layers={top} but the model has {n_layers} layers")
    layer_re = re.compile(r"\.(?:layers|h|layer|blocks)\.(\d+)\.")
    for name, p in model.named_parameters():
        m = layer_re.search(name)
        if m:
            p.requires_grad = int(m.group(1)) >= n_layers - top
        else:
            p.requires_grad = bool(re.search(r"(?:^|\.)(?:norm|ln_f|final_layernorm)\.", name))


def _logical_numel(p: torch.Tensor) -> int:
    """Weights a parameter stands for: a packed 4-bit tensor holds two per byte."""
    state = getattr(p, "quant_state", None)
    shape = getattr(state, "shape", None)
    return math.prod(shape) if shape is not None else p.numel()


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, tied weights counted once, 4-bit weights counted
    as the weights they encode."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = _logical_numel(p)
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def lora_config(cfg: Any, kind: str, targets: Any, task_type: str) -> Any:
    """peft's ``LoraConfig`` for a ``lora`` section and ``adapter.type`` (lora, rslora, dora)."""
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        use_rslora=cfg.use_rslora or kind == "rslora",
        use_dora=kind == "dora",
        task_type=task_type,
    )
