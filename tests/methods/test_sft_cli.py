"""SFT through the real CLI on tiny random models: loss falls, the right weights change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from tests.helpers.runs import step_losses, train, write_chat_data, write_config
from tunesmith.cli import main


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_lora_run_layout_loss_and_frozen_base(
    tmp_path: Path, tiny_models: Path, arch: str, request: pytest.FixtureRequest
) -> None:
    model_dir = request.getfixturevalue("tiny_llama" if arch == "llama" else "tiny_gemma")
    cfg = write_config(
        tmp_path,
        model_dir,
        write_chat_data(tmp_path / "d.jsonl"),
        train={"max_steps": 12, "eval_every": 6, "save_every": 4, "keep_last": 2},
    )
    run = train(cfg)
    for name in (
        "config.yaml",
        "env.json",
        "metrics.jsonl",
        "rejects.jsonl",
        "data/val.jsonl",
        "final/adapter_model.safetensors",
        "final/adapter_config.json",
        "final/tokenizer_config.json",
        "best/adapter_model.safetensors",
    ):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-12", "step-8"]
    assert (run / "checkpoints/step-8/state.pt").is_file()
    losses = step_losses(run)
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3

    # The adapter loads with plain peft; the base weights it sits on are untouched.
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    before = {k: v.clone() for k, v in base.state_dict().items()}
    peft_model = PeftModel.from_pretrained(base, str(run / "final"))
    lora_b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: it trained
    for name, tensor in peft_model.get_base_model().state_dict().items():
        key = name.replace(".base_layer", "")
        if "lora_" not in name and key in before:
            assert torch.equal(tensor, before[key]), name
    env = json.loads((run / "env.json").read_text())
    assert env["trainable_params"] < env["total_params"] and env["data_sha256"]
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["lora"]["r"] == 16 and resolved["data"]["train_on"] == "assistant"


def test_full_finetune_loads_with_transformers(tmp_path: Path, tiny_llama: Path) -> None:
    cfg = write_config(
        tmp_path,
        tiny_llama,
        write_chat_data(tmp_path / "d.jsonl"),
        adapter={"type": "full"},
        optim={"lr": 1e-3},
    )
    run = train(cfg)
    model = AutoModelForCausalLM.from_pretrained(str(run / "final"))
    trained = model.state_dict()
    base = _weights(tiny_llama)
    changed = [k for k, v in base.items() if not torch.equal(v, trained[k])]
    assert len(changed) == len(base)  # every tensor trained (all have gradients)


def test_top_layers_only(tmp_path: Path, tiny_llama: Path) -> None:
    cfg = write_config(
        tmp_path,
        tiny_llama,
        write_chat_data(tmp_path / "d.jsonl"),
        adapter={"type": "full"},
        train={"trainable_top_layers": 1},
    )
    run = train(cfg)
    trained = AutoModelForCausalLM.from_pretrained(str(run / "final")).state_dict()
    for key, value in _weights(tiny_llama).items():
        should_train = ".layers.1." in key or key == "model.norm.weight"
        assert torch.equal(value, trained[key]) != should_train, key


def test_bad_data_line_is_named_and_skip_records_it(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_chat_data(tmp_path / "d.jsonl", n=16)
    lines = data.read_text().splitlines()
    lines[4] = '{"messages": [{"role": "user", "content": 3}]}'
    lines[9] = "{not json"
    data.write_text("\n".join(lines) + "\n")
    cfg = write_config(tmp_path, tiny_llama, data, train={"max_steps": 1})
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{data}:5" in err and "messages[0].content" in err
    assert not (tmp_path / "runs" / "run").exists()  # a failed start leaves no run dir
    run = train(cfg, "data.on_error=skip", "train.run_name=skip")
    rejects = [json.loads(x) for x in (run / "rejects.jsonl").read_text().splitlines()]
    assert sorted(r["line"] for r in rejects) == [5, 10]
    stats = json.loads((run / "env.json").read_text())["data"]
    assert stats["train_examples"] + stats["val_examples"] + len(rejects) == 16


def test_validate_ls_and_generate(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path, tiny_llama, write_chat_data(tmp_path / "d.jsonl"))
    assert main(["validate", str(cfg)]) == 0
    assert main(["validate", str(cfg), "lora.rnk=2"]) == 2
    assert "did you mean 'lora.r'" in capsys.readouterr().err
    assert main(["ls"]) == 0
    assert "smollm2" in capsys.readouterr().out
    run = train(cfg)
    for extra in ([], ["--no-adapter"], ["--temperature", "0.8", "--seed", "1"]):
        assert (
            main(["generate", str(run), "--prompt", "1 plus 2?", "--max-new-tokens", "5", *extra])
            == 0
        )
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert out["prompt"] == "1 plus 2?" and isinstance(out["reply"], str)
    assert main(["eval", str(run)]) == 0
    tuned = json.loads(capsys.readouterr().out)
    assert main(["eval", str(run), "--no-adapter"]) == 0
    base = json.loads(capsys.readouterr().out)
    assert tuned["examples"] == base["examples"] == 6
    assert tuned["loss"] < base["loss"]  # the held-out split got easier with the adapter


def test_early_stopping_and_best_checkpoint(tmp_path: Path, tiny_llama: Path) -> None:
    # A learning rate too small to move the loss: no evaluation after the first improves on it.
    cfg = write_config(
        tmp_path,
        tiny_llama,
        write_chat_data(tmp_path / "d.jsonl"),
        train={"max_steps": 20, "eval_every": 2, "early_stopping_patience": 2},
        optim={"lr": 1e-12, "schedule": "constant"},
    )
    run = train(cfg)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "val"] == [2, 4, 6]
    assert len(step_losses(run)) == 6 and (run / "best" / "adapter_config.json").is_file()


def test_models_lists_aliases_and_converts_a_dir(
    tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models"]) == 0
    assert "smollm2-135m-instruct" in capsys.readouterr().out
    assert main(["models", "--convert", str(tiny_llama)]) == 0
    assert json.loads(capsys.readouterr().out)["model_type"] == "llama"
    assert main(["models", "--convert", "no-such-model"]) == 2
    assert "not found" in capsys.readouterr().err


def test_bf16_autocast_trains(tmp_path: Path, tiny_llama: Path) -> None:
    cfg = write_config(
        tmp_path,
        tiny_llama,
        write_chat_data(tmp_path / "d.jsonl"),
        train={"max_steps": 8, "precision": "bf16"},
    )
    run = train(cfg)
    losses = step_losses(run)
    assert sum(losses[-2:]) < sum(losses[:2])
    weights = load_file(str(run / "final" / "adapter_model.safetensors"))
    assert all(w.dtype == torch.float32 for w in weights.values())  # master weights stay fp32


def test_precision_resolution() -> None:
    from tunesmith.engine.precision import cpu_has_bf16, resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("auto", cpu) == ("bf16" if cpu_has_bf16() else "fp32")


def test_chat_keeps_the_conversation(
    tmp_path: Path,
    tiny_llama: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import io

    from tunesmith import generation

    seen: list[int] = []
    real = generation.chat_replies

    def spy(model, tok, conversations, *args, **kwargs):  # records the turns sent each time
        seen.append(len(conversations[0]))
        return real(model, tok, conversations, *args, **kwargs)

    monkeypatch.setattr(generation, "chat_replies", spy)
    monkeypatch.setattr("sys.stdin", io.StringIO("1 plus 2?\nand 3 plus 4?\n\n"))
    assert main(["chat", str(tiny_llama), "--system", "Be brief.", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.count("assistant:") == 2
    assert seen == [2, 4]  # system + user, then system + user + assistant + user
