"""merge / average / export through the real CLI on tiny LoRA and full fine-tunes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.helpers.runs import train, write_chat_data, write_config
from tunesmith.cli import main


def _run(tmp_path: Path, model_dir: Path, name: str = "run", **sections: dict) -> Path:
    data = write_chat_data(tmp_path / f"{name}.jsonl", seed=len(name))
    train_section = {"max_steps": 6, "save_every": 2, "keep_last": 3, "run_name": name}
    train_section.update(sections.pop("train", {}))
    cfg = write_config(tmp_path, model_dir, data, train=train_section, **sections)
    return train(cfg)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    return _run(tmp_path_factory.mktemp("lora"), tiny_llama)


def _report(out: Path) -> dict:
    return json.loads(out.with_name(f"{out.name}.verify.json").read_text())


@torch.no_grad()
def test_merge_equals_adapter_model(lora_run: Path, tiny_llama: Path) -> None:
    from peft import PeftModel

    assert main(["merge", str(lora_run)]) == 0
    out = lora_run / "merged"
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    report = _report(out)
    assert report["ok"] and report["max_abs_logit_diff"] < 1e-4
    assert report["greedy_agreement"] == 1.0 and report["prompts"] == 4

    # Independently of the verifier: plain transformers vs plain peft on a fresh input.
    merged = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    adapted = PeftModel.from_pretrained(base, str(lora_run / "final")).eval()
    ids = torch.randint(
        0, merged.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0)
    )
    diff = (merged(input_ids=ids).logits - adapted(input_ids=ids).logits).abs().max().item()
    assert diff < 1e-4
    plain = AutoModelForCausalLM.from_pretrained(str(tiny_llama)).eval()
    assert (
        merged(input_ids=ids).logits - plain(input_ids=ids).logits
    ).abs().max() > 1e-3  # trained
    template = AutoTokenizer.from_pretrained(str(lora_run / "final")).chat_template
    assert template and AutoTokenizer.from_pretrained(str(out)).chat_template == template


def test_failed_verification_leaves_no_output(
    lora_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "strict"
    assert main(["merge", str(lora_run), "--out", str(out), "--tolerance", "-1"]) == 2
    assert "verification failed" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".tmp-*"))
    assert _report(out)["ok"] is False


def test_export_safetensors_and_gguf_q4_k_m_is_explained(
    lora_run: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tunesmith.compress import llama_quantize

    assert main(["export", str(lora_run)]) == 0
    assert (lora_run / "export" / "model.safetensors").is_file()
    assert _report(lora_run / "export")["max_abs_logit_diff"] < 1e-4
    capsys.readouterr()
    monkeypatch.setattr(llama_quantize, "available", lambda: False)  # no llama-cpp-python
    assert main(["export", str(lora_run), "--format", "gguf", "--quant", "q4_k_m"]) == 2
    err = capsys.readouterr().err
    assert "q4_k_m needs llama.cpp's quantizer" in err and "make llama-cpp" in err
    assert "llama-quantize" in err


def test_missing_base_model_is_named(
    lora_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "moved"
    shutil.copytree(lora_run / "final", copy / "final")
    gone = str(tmp_path / "no-such-model")
    cfg = yaml.safe_load((copy / "final" / "tunesmith_config.yaml").read_text())
    cfg["model"]["name_or_path"] = gone
    (copy / "final" / "tunesmith_config.yaml").write_text(yaml.safe_dump(cfg))
    info = json.loads((copy / "final" / "adapter_config.json").read_text())
    info["base_model_name_or_path"] = gone
    (copy / "final" / "adapter_config.json").write_text(json.dumps(info))
    assert main(["merge", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "base model is missing" in err and gone in err


def test_average_adapter_checkpoints(lora_run: Path) -> None:
    ckpts = sorted((lora_run / "checkpoints").iterdir(), key=lambda p: int(p.name[5:]))
    assert [c.name for c in ckpts] == ["step-2", "step-4", "step-6"]
    assert main(["average", str(lora_run), "--last", "2"]) == 0
    out = lora_run / "averaged"
    avg = load_file(str(out / "adapter_model.safetensors"))
    a, b = (load_file(str(c / "adapter_model.safetensors")) for c in ckpts[1:])
    for key, value in avg.items():
        torch.testing.assert_close(value, (a[key] + b[key]) / 2)
    report = _report(out)
    assert report["ok"] and report["finite_logits"] and report["distance_from_last"]["l2"] > 0
    assert main(["generate", str(out), "--prompt", "1 plus 2?", "--max-new-tokens", "4"]) == 0

    assert main(["average", str(lora_run), "--last", "3", "--ema", "0.5"]) == 0
    avg = load_file(str(out / "adapter_model.safetensors"))
    c0 = load_file(str(ckpts[0] / "adapter_model.safetensors"))
    key = next(iter(avg))
    torch.testing.assert_close(avg[key], 0.25 * c0[key] + 0.25 * a[key] + 0.5 * b[key])
    assert _report(out)["weights"] == [0.25, 0.25, 0.5]


def test_average_too_few_checkpoints(lora_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["average", str(lora_run), "--last", "5"]) == 2
    assert "only 3 checkpoints" in capsys.readouterr().err


def test_full_model_average_and_export(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run(tmp_path, tiny_llama, "full", adapter={"type": "full"}, train={"max_steps": 4})
    assert main(["average", str(run), "--last", "2"]) == 0
    avg = load_file(str(run / "averaged" / "model.safetensors"))
    a, b = (
        load_file(str(run / "checkpoints" / s / "model.safetensors")) for s in ("step-2", "step-4")
    )
    for key, value in avg.items():
        torch.testing.assert_close(value, (a[key] + b[key]) / 2)
    AutoModelForCausalLM.from_pretrained(str(run / "averaged"))
    assert main(["export", str(run)]) == 0
    assert _report(run / "export")["max_abs_logit_diff"] == 0.0
    assert main(["merge", str(run)]) == 2
    assert "nothing to merge" in capsys.readouterr().err


def test_merge_gemma_tied_softcapped(tmp_path: Path, tiny_gemma: Path) -> None:
    run = _run(
        tmp_path, tiny_gemma, "gemma", train={"max_steps": 3}, lora={"target_modules": "all-linear"}
    )
    assert main(["merge", str(run)]) == 0
    report = _report(run / "merged")
    assert (
        report["ok"] and report["max_abs_logit_diff"] < 1e-4 and report["greedy_agreement"] == 1.0
    )


def test_merge_several_adapters(
    tmp_path: Path, tiny_llama: Path, tiny_gemma: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_a = _run(tmp_path, tiny_llama, "a", train={"max_steps": 2})
    run_b = _run(tmp_path, tiny_llama, "b", train={"max_steps": 2})
    run_c = _run(tmp_path, tiny_llama, "c", train={"max_steps": 2}, lora={"r": 4})
    for method in ("linear", "dare_ties"):
        out = tmp_path / method
        argv = ["merge", str(run_a), str(run_b), "--method", method, "--weights", "0.7,0.3"]
        assert main([*argv, "--out", str(out)]) == 0
        report = _report(out)
        assert report["ok"] and report["max_abs_logit_diff"] < 1e-4, report
        assert report["weights"] == [0.7, 0.3]
        assert (out / "model.safetensors").is_file()
    capsys.readouterr()
    assert main(["merge", str(run_a), str(run_c), "--method", "linear"]) == 2
    assert "equal rank" in capsys.readouterr().err
    assert (
        main(["merge", str(run_a), str(run_c), "--method", "cat", "--out", str(tmp_path / "cat")])
        == 0
    )

    other = tmp_path / "other-base"
    shutil.copytree(run_b / "final", other)
    cfg = yaml.safe_load((other / "tunesmith_config.yaml").read_text())
    cfg["model"]["name_or_path"] = str(tiny_gemma)
    (other / "tunesmith_config.yaml").write_text(yaml.safe_dump(cfg))
    info = json.loads((other / "adapter_config.json").read_text())
    info["base_model_name_or_path"] = str(tiny_gemma)
    (other / "adapter_config.json").write_text(json.dumps(info))
    assert main(["merge", str(run_a), str(other), "--method", "linear"]) == 2
    err = capsys.readouterr().err
    assert "different base models" in err and str(tiny_llama) in err and str(tiny_gemma) in err


def test_prompt_learning_adapter_is_refused(
    lora_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "prefix"
    shutil.copytree(lora_run / "final", copy)
    info = json.loads((copy / "adapter_config.json").read_text())
    (copy / "adapter_config.json").write_text(json.dumps({**info, "peft_type": "PREFIX_TUNING"}))
    assert main(["merge", str(copy)]) == 2
    assert "PREFIX_TUNING adapter cannot be merged" in capsys.readouterr().err
