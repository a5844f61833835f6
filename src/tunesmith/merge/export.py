"""Export a run as a standalone model: safetensors (a merged, plain transformers directory).

``--format gguf`` is written and verified by :mod:`tunesmith.compress.gguf_export`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tunesmith.merge.common import MergeError, fp32_device, is_adapter, run_dir_of, weights_dir
from tunesmith.merge.lora import merge_run, save_verified
from tunesmith.merge.verify import DEFAULT_TOLERANCE, model_outputs, verification_prompts
from tunesmith.models.load import load_causal_lm, load_tokenizer

FORMATS = ("safetensors", "gguf")


def export_run(
    run: str | Path,
    fmt: str = "safetensors",
    out: str | Path | None = None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    n_prompts: int = 4,
    new_tokens: int = 8,
    device: str = "auto",
    quant: str = "q8_0",
) -> dict[str, Any]:
    """Write the run's model as a standalone safetensors directory (``RUN/export``), verified;
    ``fmt="gguf"``: a GGUF file at ``quant`` and an Ollama Modelfile (``RUN/gguf``)."""
    if fmt == "gguf":
        from tunesmith.compress.gguf_export import export_gguf

        opts = {"n_prompts": n_prompts, "new_tokens": new_tokens, "device": device}
        return export_gguf(run, quant, out, **opts)
    if fmt not in FORMATS:
        raise MergeError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    weights = weights_dir(run)
    target = Path(out) if out is not None else Path(run) / "export"
    opts = {"tolerance": tolerance, "n_prompts": n_prompts, "new_tokens": new_tokens}
    if is_adapter(weights):
        return merge_run(run, target, device=device, kind=f"export-{fmt}", **opts)
    model = load_causal_lm(weights, dtype=torch.float32, device=fp32_device(device)).eval()
    prompts = verification_prompts(load_tokenizer(weights), run_dir_of(run), n_prompts)
    reference = model_outputs(model, prompts, new_tokens)
    info = {"kind": f"export-{fmt}", "model": str(weights)}
    return save_verified(
        model,
        weights,
        reference,
        prompts,
        target,
        tolerance=tolerance,
        new_tokens=new_tokens,
        info=info,
    )
