"""``tunesmith export RUN --format gguf --quant Q``: merged model -> verified GGUF + Modelfile.

The file is written to a staging directory beside ``out``, loaded back with transformers'
GGUF loader (``from_pretrained(..., gguf_file=...)``, which dequantizes it) and compared with
the merged float32 model on the verification prompts. ``out`` appears only if the comparison
passes; the report (``out.verify.json``) is written either way.

Tolerances (max |logit difference| relative to the largest |logit| of the reference, float32):
``f16`` 1e-2 and identical greedy replies; ``q8_0`` 5e-2; ``q4_0`` / ``q4_1`` / ``q4_k_m`` 0.3.
Quantized files need not reproduce every greedy token (a near-tie can flip); their agreement is
reported, not required.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from tunesmith.compress.gguf_writer import check_supported, write_gguf
from tunesmith.engine.lineage import record_merge
from tunesmith.merge.common import (
    base_model_path,
    fp32_device,
    is_adapter,
    publish,
    run_dir_of,
    staged,
    weights_dir,
)
from tunesmith.merge.verify import Outputs, compare, model_outputs, verification_prompts
from tunesmith.models.load import load_causal_lm, load_tokenizer

RELATIVE_TOLERANCE = {"f16": 1e-2, "q8_0": 5e-2, "q4_0": 0.3, "q4_1": 0.3, "q4_k_m": 0.3}
GREEDY_MUST_MATCH = {"f16": True, "q8_0": False, "q4_0": False, "q4_1": False, "q4_k_m": False}

CHATML_TEMPLATE = (
    "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)
LLAMA3_TEMPLATE = (
    "{{- if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>"
    "{{ end }}{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
    "{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
)


def _merged_model(run: str | Path, device: torch.device) -> tuple[Any, Path]:
    """The run's model in float32 with any LoRA adapter folded in, and its tokenizer dir."""
    weights = weights_dir(run)
    if not is_adapter(weights):
        return load_causal_lm(weights, dtype=torch.float32, device=device).eval(), weights
    from peft import PeftModel

    base = load_causal_lm(base_model_path(weights), dtype=torch.float32, device=device)
    model = PeftModel.from_pretrained(base, str(weights)).to(device).merge_and_unload()
    return model.eval(), weights


def modelfile(gguf_name: str, tokenizer: Any) -> str:
    """An Ollama ``Modelfile``: the GGUF, a Go chat template (ChatML or Llama 3), stop tokens."""
    template = str(getattr(tokenizer, "chat_template", "") or "")
    lines = [f"FROM ./{gguf_name}"]
    if "<|im_start|>" in template:
        go, stops = CHATML_TEMPLATE, ["<|im_start|>", "<|im_end|>"]
    elif "<|start_header_id|>" in template:
        go, stops = LLAMA3_TEMPLATE, ["<|start_header_id|>", "<|eot_id|>"]
    else:
        go, stops = "", []
        lines.append("# No known chat format: Ollama falls back to the GGUF's chat template.")
    if go:
        lines.append(f'TEMPLATE """{go}"""')
    eos = getattr(tokenizer, "eos_token", None)
    for stop in dict.fromkeys([*stops, *([eos] if eos else [])]):
        lines.append(f"PARAMETER stop {json.dumps(stop)}")
    return "\n".join(lines) + "\n"


def _gguf_outputs(folder: Path, name: str, prompts: list[list[int]], new_tokens: int) -> Outputs:
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=name, dtype=torch.float32)
    return model_outputs(loaded.eval(), prompts, new_tokens)


def _verdict(reference: Outputs, candidate: Outputs, quant: str) -> dict[str, Any]:
    scale = max(float(t.abs().max()) for t in reference.logits)
    tolerance = RELATIVE_TOLERANCE[quant] * scale
    result = compare(reference, candidate, tolerance)
    result["relative_tolerance"] = RELATIVE_TOLERANCE[quant]
    result["max_abs_reference_logit"] = scale
    result["relative_logit_gap"] = result["max_abs_logit_diff"] / max(scale, 1e-12)
    result["greedy_must_match"] = GREEDY_MUST_MATCH[quant]
    if result["ok"] and GREEDY_MUST_MATCH[quant] and result["greedy_agreement"] < 1.0:
        result["ok"] = False
        result["reason"] = f"greedy replies differ ({result['greedy_agreement']:.0%} agree)"
    return result


def export_gguf(
    run: str | Path,
    quant: str = "q8_0",
    out: str | Path | None = None,
    *,
    n_prompts: int = 4,
    new_tokens: int = 8,
    device: str = "auto",
) -> dict[str, Any]:
    """Write ``OUT/model-<quant>.gguf`` and ``OUT/Modelfile`` (default ``RUN/gguf``), verified."""
    from transformers import AutoConfig

    weights = weights_dir(run)
    arch_dir = base_model_path(weights) if is_adapter(weights) else weights
    check_supported(AutoConfig.from_pretrained(str(arch_dir)).model_type, quant)
    model, tokenizer_dir = _merged_model(run, fp32_device(device))
    tokenizer = load_tokenizer(tokenizer_dir)
    prompts = verification_prompts(tokenizer, run_dir_of(run), n_prompts)
    reference = model_outputs(model, prompts, new_tokens)
    target = Path(out) if out is not None else Path(run) / "gguf"
    name = f"model-{quant}.gguf"
    tmp = staged(target)
    try:
        size = write_gguf(model.cpu(), tokenizer, tokenizer_dir, quant, tmp / name)
        (tmp / "Modelfile").write_text(modelfile(name, tokenizer))
        # lineage.json: the GGUF and Modelfile by hash; parent = the merged model / run read.
        sources: dict[str, list[str | Path]] = {"model": [weights]}
        if is_adapter(weights):
            sources = {"adapter": [weights], "base_model": [base_model_path(weights)]}
        record_merge(tmp, target, f"export-gguf-{quant}", sources)
        del model
        report = {
            "kind": f"export-gguf-{quant}",
            "model": str(weights),
            "output": str(target / name),
            "quant": quant,
            "bytes": size,
            "loader": "transformers gguf_file= (dequantized to float32)",
            **_verdict(reference, _gguf_outputs(tmp, name, prompts, new_tokens), quant),
        }
        publish(tmp, target, report)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report
