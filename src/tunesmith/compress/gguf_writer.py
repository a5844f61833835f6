"""Write a transformers causal LM as a GGUF file with the ``gguf`` package (llama.cpp's own
Python library): its ``GGUFWriter`` for the container, its ``TensorNameMap`` for tensor names,
its ``SpecialVocab`` for merges / special ids / chat template, its ``quants`` for Q8_0, Q4_0, Q4_1.

What we add is what llama.cpp's ``convert_hf_to_gguf.py`` (not on PyPI) adds on top of those,
for the architectures we support:

- Llama: the q/k projections are permuted from Hugging Face's rotate-half RoPE layout to GGML's
  interleaved one (``LlamaModel.permute`` in the converter; transformers' GGUF loader undoes it).
- Gemma3: RMSNorm weights are stored as ``1 + w`` (HF's Gemma norm multiplies by ``1 + w``).

Quantization: ``f16`` stores every matrix in float16; ``q8_0`` / ``q4_0`` quantize every matrix
whose rows split into 32-value blocks and keep the rest in float16 (``q4_1`` likewise, with a
per-block minimum); under ``q4_0``/``q4_1`` the token
embedding and output head are Q8_0 (llama.cpp keeps them at Q6_K). Norm vectors stay float32.
``q4_k_m``: ``gguf.quants`` implements Q4_K dequantization only (quantization raises
``NotImplementedError`` in numpy), so the f16 file is written and llama.cpp's own quantizer
makes the K-quant file (:mod:`tunesmith.compress.llama_quantize`); without llama-cpp-python
(source-only on PyPI: ``make llama-cpp`` builds it) ``q4_k_m`` is refused with that command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

from tunesmith.compress import llama_quantize
from tunesmith.errors import UserError

QUANTS: dict[str, gguf.GGMLQuantizationType] = {
    "f16": gguf.GGMLQuantizationType.F16,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
    "q4_0": gguf.GGMLQuantizationType.Q4_0,
    "q4_1": gguf.GGMLQuantizationType.Q4_1,
}
FILE_TYPES: dict[str, gguf.LlamaFileType] = {
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
    "q4_1": gguf.LlamaFileType.MOSTLY_Q4_1,
}
ARCHES: dict[str, gguf.MODEL_ARCH] = {
    "llama": gguf.MODEL_ARCH.LLAMA,
    "gemma3_text": gguf.MODEL_ARCH.GEMMA3,
}
Q4_K_M_HELP = (
    "--quant q4_k_m needs llama.cpp's quantizer: the `gguf` package implements Q4_K "
    "dequantization only. Install llama-cpp-python (`make llama-cpp` builds it; PyPI has no "
    "wheel), or export f16 here and run llama.cpp's `llama-quantize model-f16.gguf "
    "model-q4_k_m.gguf Q4_K_M`."
)


class GGUFExportError(UserError):
    """The model or the requested quant type cannot be written as GGUF."""


def check_supported(model_type: str, quant: str) -> None:
    """Refuse an architecture or quant type we cannot write, naming what is supported."""
    if quant in llama_quantize.FTYPES:
        if not llama_quantize.available():
            raise GGUFExportError(Q4_K_M_HELP)
    elif quant not in QUANTS:
        raise GGUFExportError(f"--quant {quant}: choose one of {', '.join([*QUANTS, 'q4_k_m'])}")
    if model_type not in ARCHES:
        raise GGUFExportError(
            f"GGUF export supports {', '.join(ARCHES)} models; this one is {model_type!r}"
        )


def permute_rope(w: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """HF rotate-half q/k rows -> GGML interleaved pairs (``convert_hf_to_gguf`` ``permute``)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    shape = w.shape
    return w.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _tensor_type(name: str, data: np.ndarray, quant: str) -> gguf.GGMLQuantizationType:
    if data.ndim == 1 or name.endswith("norm.weight"):
        return gguf.GGMLQuantizationType.F32
    qtype = QUANTS[quant]
    four_bit = (gguf.GGMLQuantizationType.Q4_0, gguf.GGMLQuantizationType.Q4_1)
    if qtype in four_bit and name in ("token_embd.weight", "output.weight"):
        # The (often tied) output head at 4 bits moves every logit; llama.cpp keeps it at Q6_K,
        # which gguf's numpy code cannot write, so Q8_0.
        qtype = gguf.GGMLQuantizationType.Q8_0
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if data.shape[-1] % block:
        return gguf.GGMLQuantizationType.F16
    return qtype


def _weights(model: Any) -> list[tuple[str, np.ndarray]]:
    """(GGUF name, float32 array) of every tensor, converted as llama.cpp expects."""
    config = model.config
    arch = ARCHES[config.model_type]
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    out = []
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and getattr(config, "tie_word_embeddings", False):
            continue  # llama.cpp reuses token_embd when output.weight is absent
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise GGUFExportError(f"no GGUF name for tensor {hf_name} ({config.model_type})")
        data = tensor.detach().to(torch.float32).cpu().numpy()
        if arch == gguf.MODEL_ARCH.LLAMA and name.endswith("attn_q.weight"):
            data = permute_rope(data, heads, heads)
        elif arch == gguf.MODEL_ARCH.LLAMA and name.endswith("attn_k.weight"):
            data = permute_rope(data, heads, kv_heads)
        elif arch == gguf.MODEL_ARCH.GEMMA3 and name.endswith("norm.weight"):
            data = data + 1.0
        out.append((name, data))
    return out


def _hparams(writer: gguf.GGUFWriter, config: Any) -> None:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    rope = getattr(config, "rope_parameters", None) or {}
    theta = rope.get("rope_theta") if isinstance(rope, dict) else None
    if config.model_type == "gemma3_text" and isinstance(rope.get("full_attention"), dict):
        theta = rope["full_attention"].get("rope_theta")
    writer.add_rope_freq_base(float(theta or getattr(config, "rope_theta", 10000.0)))
    if config.model_type == "llama":
        writer.add_rope_dimension_count(head_dim)
    else:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        writer.add_sliding_window(config.sliding_window)
        if config.final_logit_softcapping is not None:
            writer.add_final_logit_softcapping(config.final_logit_softcapping)


def _pre_tokenizer(tokenizer_dir: Path) -> str:
    """llama.cpp's pre-tokenizer name: ``smollm`` (single digits + GPT-2 regex) or ``gpt-2``."""
    path = tokenizer_dir / "tokenizer.json"
    pre = json.loads(path.read_text()).get("pre_tokenizer") if path.is_file() else None
    text = json.dumps(pre or {})
    return "smollm" if '"Digits"' in text and '"individual_digits": true' in text else "gpt-2"


def _vocab(writer: gguf.GGUFWriter, tokenizer: Any, tokenizer_dir: Path, n_vocab: int) -> None:
    """Byte-level BPE vocabulary: tokens by id, their types, merges, special ids, template."""
    if not (tokenizer_dir / "tokenizer.json").is_file() or not tokenizer.is_fast:
        raise GGUFExportError(f"{tokenizer_dir}: GGUF export needs a fast BPE tokenizer.json")
    model = json.loads((tokenizer_dir / "tokenizer.json").read_text())["model"]
    if model.get("type") != "BPE":
        raise GGUFExportError(f"{tokenizer_dir}: tokenizer is {model.get('type')}, not BPE")
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(by_id[i])
        if i in added:
            types.append(
                gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED
            )
        else:
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(tokenizer_dir))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(tokenizer_dir, load_merges=True, n_vocab=n_vocab)
    special.add_to_gguf(writer, quiet=True)


def write_gguf(model: Any, tokenizer: Any, tokenizer_dir: Path, quant: str, path: Path) -> int:
    """Write ``model`` (float32, merged) to ``path`` at ``quant``; returns the file's bytes."""
    config = model.config
    check_supported(config.model_type, quant)
    if quant in llama_quantize.FTYPES:  # f16 first, then llama.cpp's K-quant quantizer
        f16 = path.with_name(path.name + ".f16")
        write_gguf(model, tokenizer, tokenizer_dir, "f16", f16)
        try:
            llama_quantize.quantize(f16, path, quant)
        finally:
            f16.unlink(missing_ok=True)
        return path.stat().st_size
    arch = ARCHES[config.model_type]
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(Path(getattr(config, "_name_or_path", "") or "model").name or "model")
    writer.add_file_type(FILE_TYPES[quant])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _hparams(writer, config)
    _vocab(writer, tokenizer, tokenizer_dir, config.vocab_size)
    for name, data in _weights(model):
        qtype = _tensor_type(name, data, quant)
        if qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, data)
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, data.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.stat().st_size
