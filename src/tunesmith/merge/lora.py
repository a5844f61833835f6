"""Fold LoRA adapters into their base model and save a plain transformers model.

``merge_run`` folds one run's adapter in (``merge_and_unload``); ``merge_adapters`` first
combines the adapters of several runs of one base with peft's ``add_weighted_adapter`` (linear,
TIES, DARE; ``cat``/``svd`` also accept unequal ranks) and folds the result in. Either way the
saved model is reloaded from disk and checked against the adapter model before it is published.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from tunesmith.engine.lineage import record_merge
from tunesmith.merge.common import (
    ADAPTER_CONFIG,
    MergeError,
    base_model_path,
    fp32_device,
    is_adapter,
    publish,
    run_dir_of,
    staged,
    weights_dir,
    write_report,
)
from tunesmith.merge.quantized import quantization_report
from tunesmith.merge.verify import (
    DEFAULT_TOLERANCE,
    Outputs,
    compare,
    model_outputs,
    verification_prompts,
)
from tunesmith.models.load import load_causal_lm, load_tokenizer
from tunesmith.models.safe_weights import check_weights_dir

EQUAL_RANK_METHODS = ("linear", "ties", "dare_ties", "dare_linear")
METHODS = (*EQUAL_RANK_METHODS, "cat", "svd")
DENSITY_METHODS = ("ties", "dare_ties", "dare_linear")
# Virtual tokens, not weight deltas: nothing to fold into the base.
PROMPT_LEARNING = ("PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING", "MULTITASK_PROMPT_TUNING")


def _adapter_dir(target: str | Path, lora_only: bool = False) -> Path:
    """The adapter directory of a run; an error for full models and unmergeable adapters."""
    weights = weights_dir(target)
    if not is_adapter(weights):
        raise MergeError(
            f"{weights}: a full model, not a LoRA adapter; there is nothing to merge "
            "(use `tunesmith export` to write it out)"
        )
    kind = str(json.loads((weights / ADAPTER_CONFIG).read_text()).get("peft_type", "LORA"))
    if kind in PROMPT_LEARNING or (lora_only and kind != "LORA"):
        need = "LoRA adapters" if lora_only else "an adapter that changes weights"
        raise MergeError(f"{weights}: a {kind} adapter cannot be merged here (needs {need})")
    return weights


def save_verified(
    model: Any,
    tokenizer_dir: Path,
    reference: Outputs,
    prompts: list[list[int]],
    out: Path,
    *,
    tolerance: float,
    new_tokens: int,
    info: dict[str, Any],
) -> dict[str, Any]:
    """Save ``model`` + tokenizer to a temp dir, reload it, compare with ``reference`` and
    rename it to ``out`` only if the comparison passes. Returns the verification report."""
    tmp = staged(out)
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        # The run's tokenizer as saved (chat template included), not the padded in-memory copy.
        AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(tmp))
        for name in ("tunesmith_config.yaml",):
            if (tokenizer_dir / name).is_file():
                shutil.copy(tokenizer_dir / name, tmp / name)
        record_merge(tmp, out, str(info["kind"]), lineage_sources(info))
        device = next(model.parameters()).device
        reloaded = load_causal_lm(tmp, dtype=torch.float32, device=device).eval()
        report = {
            **info,
            "output": str(out),
            **compare(reference, model_outputs(reloaded, prompts, new_tokens), tolerance),
        }
        publish(tmp, out, report)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def lineage_sources(info: dict[str, Any]) -> dict[str, list[str | Path]]:
    """What a merge/export read, by role, from its report's ``adapter(s)``/``base``/``model``."""
    roles = {"adapter": "adapter", "adapters": "adapter", "base": "base_model", "model": "model"}
    out: dict[str, list[str | Path]] = {}
    for key, role in roles.items():
        value = info.get(key)
        if value:
            out.setdefault(role, []).extend(value if isinstance(value, list) else [value])
    return out


def merge_run(
    run: str | Path,
    out: str | Path | None = None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    n_prompts: int = 4,
    new_tokens: int = 8,
    device: str = "auto",
    kind: str = "merge",
) -> dict[str, Any]:
    """Fold the run's LoRA adapter into its base; write ``RUN/merged`` (or ``out``)."""
    from peft import PeftModel

    adapter = _adapter_dir(run)
    check_weights_dir(adapter, adapter=True)
    base = base_model_path(adapter)
    dev = fp32_device(device)
    model = load_causal_lm(base, dtype=torch.float32, device=dev)
    model = PeftModel.from_pretrained(model, str(adapter)).to(dev).eval()
    prompts = verification_prompts(load_tokenizer(adapter), run_dir_of(run), n_prompts)
    reference = model_outputs(model, prompts, new_tokens)
    merged = model.merge_and_unload()
    target = Path(out) if out is not None else Path(run) / "merged"
    info = {"kind": kind, "adapter": str(adapter), "base": str(base)}
    report = save_verified(
        merged,
        adapter,
        reference,
        prompts,
        target,
        tolerance=tolerance,
        new_tokens=new_tokens,
        info=info,
    )
    del model, merged
    # QLoRA/int8-base runs: what merging into full precision and re-quantizing change.
    quant = quantization_report(adapter, base, target, reference, prompts, new_tokens, dev)
    if quant is not None:
        report["quantized_training"] = quant
        write_report(target, report)
    return report


def _same_base(adapters: list[Path]) -> Path:
    """The one base model all ``adapters`` were trained on; an error naming both otherwise."""
    bases = [base_model_path(a) for a in adapters]
    first = bases[0].resolve()
    for adapter, base in zip(adapters[1:], bases[1:], strict=True):
        if base.resolve() != first:
            raise MergeError(
                f"adapters of different base models cannot be merged: {adapters[0]} is on "
                f"{bases[0]}, {adapter} is on {base}"
            )
    return bases[0]


def _check_ranks(model: Any, names: list[str], adapters: list[Path], method: str) -> None:
    ranks = [model.peft_config[n].r for n in names]
    if method in EQUAL_RANK_METHODS and len(set(ranks)) > 1:
        listed = ", ".join(f"{a} (r={r})" for a, r in zip(adapters, ranks, strict=True))
        raise MergeError(
            f"--method {method} needs adapters of equal rank, got {listed}; "
            "use --method cat or svd for unequal ranks"
        )


def combine_adapters(
    adapters: list[Path],
    base: Path,
    method: str,
    weights: list[float],
    density: float | None,
    device: torch.device,
    seed: int = 0,
) -> Any:
    """A peft model on ``base`` whose active adapter ``merged`` combines ``adapters``."""
    from peft import PeftModel

    for path in adapters:
        check_weights_dir(path, adapter=True)
    model = load_causal_lm(base, dtype=torch.float32, device=device)
    names = [f"a{i}" for i in range(len(adapters))]
    model = PeftModel.from_pretrained(model, str(adapters[0]), adapter_name=names[0])
    for name, path in zip(names[1:], adapters[1:], strict=True):
        model.load_adapter(str(path), adapter_name=name)
    _check_ranks(model, names, adapters, method)
    torch.manual_seed(seed)  # DARE drops parameters at random
    extra = {"density": density} if method in DENSITY_METHODS else {}
    model.add_weighted_adapter(names, weights, "merged", combination_type=method, **extra)
    model.set_adapter("merged")
    for name in names:
        model.delete_adapter(name)
    return model.to(device).eval()


def merge_adapters(
    runs: list[str | Path],
    method: str,
    weights: list[float] | None = None,
    density: float | None = None,
    out: str | Path | None = None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    n_prompts: int = 4,
    new_tokens: int = 8,
    device: str = "auto",
) -> dict[str, Any]:
    """Combine the adapters of several runs of one base and fold the result into the base."""
    if method not in METHODS:
        raise MergeError(f"unknown merge method {method!r}; choose one of {', '.join(METHODS)}")
    weights = weights or [1.0 / len(runs)] * len(runs)
    if len(weights) != len(runs):
        raise MergeError(f"--weights has {len(weights)} values for {len(runs)} runs")
    if method in DENSITY_METHODS and density is None:
        density = 0.5
    adapters = [_adapter_dir(r, lora_only=True) for r in runs]
    base = _same_base(adapters)
    dev = fp32_device(device)
    model = combine_adapters(adapters, base, method, weights, density, dev)
    prompts = verification_prompts(load_tokenizer(adapters[0]), run_dir_of(runs[0]), n_prompts)
    reference = model_outputs(model, prompts, new_tokens)
    merged = model.merge_and_unload()
    names = "+".join(Path(r).name for r in runs)
    target = Path(out) if out is not None else Path(runs[0]).parent / f"merged-{method}-{names}"
    info = {
        "kind": "merge-adapters",
        "adapters": [str(a) for a in adapters],
        "base": str(base),
        "method": method,
        "weights": weights,
        "density": density,
    }
    return save_verified(
        merged,
        adapters[0],
        reference,
        prompts,
        target,
        tolerance=tolerance,
        new_tokens=new_tokens,
        info=info,
    )
