"""Export a run as a standalone model: safetensors (a merged, plain transformers directory).

GGUF is not written here. The maintained HF -> GGUF converter is llama.cpp's
``convert_hf_to_gguf.py``, which is not published on PyPI (the ``gguf`` package from the same
project only reads and writes the container format); writing our own converter would mean
re-implementing its per-architecture tensor naming and tokenizer handling. So ``--format gguf``
stops with an explanation and the command to run on the safetensors export instead.
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
GGUF_HELP = (
    "--format gguf is not supported: the maintained HF->GGUF converter is llama.cpp's "
    "convert_hf_to_gguf.py, which is not installable from PyPI (the `gguf` package has the file "
    "writer, not the converter). Export safetensors first, then convert with llama.cpp:\n"
    "  tunesmith export RUN --format safetensors --out OUT\n"
    "  git clone https://github.com/ggml-org/llama.cpp\n"
    "  pip install -r llama.cpp/requirements.txt\n"
    "  python llama.cpp/convert_hf_to_gguf.py OUT --outfile model.gguf --outtype f16"
)


def export_run(
    run: str | Path,
    fmt: str = "safetensors",
    out: str | Path | None = None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    n_prompts: int = 4,
    new_tokens: int = 8,
    device: str = "auto",
) -> dict[str, Any]:
    """Write the run's model as a standalone safetensors directory (``RUN/export``), verified."""
    if fmt == "gguf":
        raise MergeError(GGUF_HELP)
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
