"""``tunesmith export --format gguf`` on tiny Llama / Gemma3 models and a tiny LoRA run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.helpers.runs import train, write_chat_data, write_config
from tunesmith.cli import main
from tunesmith.compress.gguf_writer import permute_rope


def _verify(out: Path) -> dict:
    return json.loads(out.with_name(f"{out.name}.verify.json").read_text())


def test_permute_rope_matches_transformers_inverse() -> None:
    """Our permutation is undone exactly by transformers' GGUF loader (reverse permute)."""
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = np.arange(16 * 24, dtype=np.float32).reshape(16, 24)
    proc = LlamaTensorProcessor(config={"num_attention_heads": 4, "num_key_value_heads": 2})
    for name, kv in (("blk.0.attn_q.weight", 4), ("blk.0.attn_k.weight", 2)):
        permuted = permute_rope(w[: kv * 4], 4, kv)
        assert not np.array_equal(permuted, w[: kv * 4])
        assert np.array_equal(proc.process(permuted, name).weights, w[: kv * 4])


@pytest.mark.parametrize("quant", ["f16", "q8_0", "q4_0", "q4_1"])
def test_export_gguf_llama_verified(tiny_llama: Path, tmp_path: Path, quant: str) -> None:
    out = tmp_path / "gguf"
    assert main(["export", str(tiny_llama), "--format", "gguf", "--quant", quant,
                 "--out", str(out), "--device", "cpu", "--prompts", "2"]) == 0  # fmt: skip
    report = _verify(out)
    assert report["ok"] and report["quant"] == quant
    assert report["relative_logit_gap"] <= report["relative_tolerance"]
    path = out / f"model-{quant}.gguf"
    reader = gguf.GGUFReader(str(path))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == quant.upper()
    assert types["output_norm.weight"] == "F32"
    assert types["token_embd.weight"] == ("Q8_0" if quant.startswith("q4") else quant.upper())
    fields = reader.fields
    assert bytes(fields["general.architecture"].parts[-1]).decode() == "llama"
    template = bytes(fields["tokenizer.chat_template"].parts[-1]).decode()
    assert "<|im_start|>" in template
    assert len(fields["tokenizer.ggml.merges"].data) > 0
    # The tokenizer read back from the GGUF encodes like the original one.
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    back = AutoTokenizer.from_pretrained(str(out), gguf_file=path.name)
    text = "Hello world, 42 apples <|im_end|>"
    assert back.encode(text) == tok.encode(text)
    modelfile = (out / "Modelfile").read_text()
    assert f"FROM ./model-{quant}.gguf" in modelfile and "<|im_start|>" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile


def test_export_gguf_f16_bytes_and_logits(tiny_llama: Path, tmp_path: Path) -> None:
    """f16 halves nothing but keeps the logits within 1e-2 of the reference (relative)."""
    out = tmp_path / "g"
    assert main(["export", str(tiny_llama), "--format", "gguf", "--quant", "f16",
                 "--out", str(out), "--device", "cpu", "--prompts", "1"]) == 0  # fmt: skip
    ref = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    back = AutoModelForCausalLM.from_pretrained(
        str(out), gguf_file="model-f16.gguf", dtype=torch.float32
    )
    ids = torch.tensor([[3, 17, 45, 99, 120, 7]])
    with torch.no_grad():
        a, b = ref(ids).logits, back(ids).logits
    assert (a - b).abs().max() < 1e-2 * a.abs().max()
    assert _verify(out)["greedy_agreement"] == 1.0


def test_export_gguf_gemma3(tiny_gemma: Path, tmp_path: Path) -> None:
    out = tmp_path / "gguf"
    assert main(["export", str(tiny_gemma), "--format", "gguf", "--quant", "q8_0",
                 "--out", str(out), "--device", "cpu", "--prompts", "2"]) == 0  # fmt: skip
    reader = gguf.GGUFReader(str(out / "model-q8_0.gguf"))
    assert bytes(reader.fields["general.architecture"].parts[-1]).decode() == "gemma3"
    assert _verify(out)["ok"]


def test_export_gguf_lora_run(tiny_llama: Path, tmp_path: Path) -> None:
    data = write_chat_data(tmp_path / "d.jsonl", n=16)
    run = train(write_config(tmp_path, tiny_llama, data, train={"max_steps": 2}))
    assert main(["export", str(run), "--format", "gguf", "--quant", "f16",
                 "--device", "cpu", "--prompts", "2"]) == 0  # fmt: skip
    assert (run / "gguf" / "model-f16.gguf").is_file()
    assert _verify(run / "gguf")["ok"]


def _sharp_attention(model_dir: Path, out: Path) -> Path:
    """A copy whose q/k weights are scaled up: random-init attention is near uniform, so a
    wrong q/k layout would hardly change the logits; sharp attention makes it show."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(30.0)
            layer.self_attn.k_proj.weight.mul_(30.0)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return out


def test_export_gguf_failed_verification_writes_nothing(
    tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conversion bug (here: no RoPE permutation) is caught before the file is put in place."""
    import tunesmith.compress.gguf_writer as writer

    sharp = _sharp_attention(tiny_llama, tmp_path / "sharp")
    out = tmp_path / "gguf"
    assert main(["export", str(sharp), "--format", "gguf", "--quant", "f16",
                 "--out", str(out), "--device", "cpu", "--prompts", "2"]) == 0  # fmt: skip
    monkeypatch.setattr(writer, "permute_rope", lambda w, n_head, n_kv: w)
    out = tmp_path / "gguf-bad"
    code = main(["export", str(sharp), "--format", "gguf", "--quant", "f16",
                 "--out", str(out), "--device", "cpu", "--prompts", "2"])  # fmt: skip
    assert code == 2
    assert not out.exists() and not list(tmp_path.glob(".tmp-*"))
    assert _verify(out)["ok"] is False


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="`make llama-cpp`")
def test_export_gguf_q4_k_m_through_llama_cpp(tiny_llama: Path, tmp_path: Path) -> None:
    """q4_k_m: the f16 file quantized by llama.cpp's own quantizer, then verified like the rest
    (loaded back by transformers, which dequantizes K-quants); the f16 intermediate is gone."""
    out = tmp_path / "gguf"
    assert main(["export", str(tiny_llama), "--format", "gguf", "--quant", "q4_k_m",
                 "--out", str(out), "--device", "cpu"]) == 0  # fmt: skip
    report = _verify(out)
    assert report["ok"] and report["quant"] == "q4_k_m"
    assert sorted(p.name for p in out.iterdir()) == [
        "Modelfile", "lineage.json", "model-q4_k_m.gguf"
    ]  # fmt: skip
    reader = gguf.GGUFReader(str(out / "model-q4_k_m.gguf"))
    assert int(reader.fields["general.file_type"].parts[-1][0]) == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
