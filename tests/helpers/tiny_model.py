"""Tiny random causal LMs built in code (2 layers, hidden 32), saved as HF model directories."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig

from tests.helpers.tiny_tokenizer import make_tiny_tokenizer

ARCHITECTURES = ("llama", "gemma3_text")


def tiny_config(arch: str, vocab_size: int, pad_id: int, eos_id: int, bos_id: int):
    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        bos_token_id=bos_id,
        tie_word_embeddings=True,
    )
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "gemma3_text":
        return Gemma3TextConfig(
            **common, head_dim=8, sliding_window=64, final_logit_softcapping=30.0
        )
    raise ValueError(arch)


def make_tiny_model_dir(root: Path, arch: str = "llama", seed: int = 0) -> Path:
    """Write a tiny random model + tokenizer (SmolLM2-like ChatML) to ``root / arch``."""
    out = root / arch
    if (out / "config.json").is_file():
        return out
    tok = make_tiny_tokenizer()
    cfg = tiny_config(arch, len(tok), tok.pad_token_id, tok.eos_token_id, tok.bos_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def make_llama64_dir(out: Path) -> Path:
    """A 64-wide tiny Llama (seed 0): bitsandbytes' CPU NF4 kernels need widths that are
    multiples of 64."""
    tok = make_tiny_tokenizer()
    cfg = tiny_config("llama", len(tok), tok.pad_token_id, tok.eos_token_id, tok.bos_token_id)
    cfg.hidden_size, cfg.intermediate_size, cfg.head_dim = 64, 128, 16
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out
