"""No pickle by default: every ``torch.load`` is ``weights_only=True``; model, adapter and
checkpoint directories holding only pickle weights are refused unless the user trusts them."""

from __future__ import annotations

import argparse
import ast
import io
import shutil
import tokenize
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from tests.helpers.runs import write_chat_data, write_config
from tunesmith.cli import main
from tunesmith.models.load import load_causal_lm, load_for_inference
from tunesmith.models.safe_weights import TRUST_PICKLE_ENV, PickleWeightsError

SRC = Path(__file__).resolve().parents[2] / "src" / "tunesmith"


@pytest.fixture(autouse=True)
def _untrusted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRUST_PICKLE_ENV, raising=False)


def _torch_load_calls(tree: ast.AST) -> list[ast.Call]:
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if node.func.attr == "load" and isinstance(owner, ast.Name) and owner.id == "torch":
                calls.append(node)
    return calls


def _torch_load_mentions(text: str) -> int:
    """How many times the tokens ``torch . load`` occur in code (strings and comments aside)."""
    names = [
        t.string
        for t in tokenize.generate_tokens(io.StringIO(text).readline)
        if t.type in (tokenize.NAME, tokenize.OP)
    ]
    return sum(names[i : i + 3] == ["torch", ".", "load"] for i in range(len(names)))


def _weights_only_true(call: ast.Call) -> bool:
    return any(
        k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
        for k in call.keywords
    )


def test_every_torch_load_in_the_package_is_weights_only() -> None:
    found, unsafe = 0, []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        calls = _torch_load_calls(tree)
        # every `torch.load` in the code (not in strings) is a call the AST walk saw
        assert _torch_load_mentions(text) == len(calls), path
        assert "from torch import load" not in text, path
        found += len(calls)
        unsafe += [
            f"{path.relative_to(SRC)}:{c.lineno}" for c in calls if not _weights_only_true(c)
        ]
    assert found >= 3  # checkpoint state, reference log-probs, trusted pickle checkpoints
    assert unsafe == []


def test_the_checker_catches_a_pickle_load() -> None:
    bad = ast.parse("import torch\nx = torch.load('f.pt', map_location='cpu')\n")
    good = ast.parse("import torch\nx = torch.load('f.pt', weights_only=True)\n")
    assert [_weights_only_true(c) for c in _torch_load_calls(bad)] == [False]
    assert [_weights_only_true(c) for c in _torch_load_calls(good)] == [True]


@pytest.fixture(scope="module")
def pickle_model(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with its weights in ``pytorch_model.bin`` only (transformers 5 writes
    safetensors even when asked not to, so the pickle file is written with ``torch.save``)."""
    out = tmp_path_factory.mktemp("pickled") / "model"
    shutil.copytree(tiny_llama, out)
    (out / "model.safetensors").unlink()
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    torch.save(model.state_dict(), out / "pytorch_model.bin")
    return out


def _same_weights(a: Any, b: Any) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_pickle_only_model_is_refused_naming_dir_and_flag(
    pickle_model: Path, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpu = torch.device("cpu")
    with pytest.raises(PickleWeightsError) as err:
        load_causal_lm(pickle_model, dtype=torch.float32, device=cpu)
    message = str(err.value)
    assert str(pickle_model) in message and "pytorch_model.bin" in message
    assert f"{TRUST_PICKLE_ENV}=1" in message and "model.trust_pickle" in message

    reference = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    trusted = load_causal_lm(pickle_model, dtype=torch.float32, device=cpu, trust_pickle=True)
    assert _same_weights(trusted, reference)
    monkeypatch.setenv(TRUST_PICKLE_ENV, "1")
    by_env = load_causal_lm(pickle_model, dtype=torch.float32, device=cpu)
    assert _same_weights(by_env, reference)


def test_a_model_with_safetensors_loads_them_not_the_pickle(
    tiny_llama: Path, tmp_path: Path
) -> None:
    # A .bin beside safetensors is never read: a broken pickle there changes nothing.
    both = tmp_path / "both"
    shutil.copytree(tiny_llama, both)
    (both / "pytorch_model.bin").write_bytes(b"not a pickle")
    model = load_causal_lm(both, dtype=torch.float32, device=torch.device("cpu"))
    assert _same_weights(model, AutoModelForCausalLM.from_pretrained(str(tiny_llama)))


def test_generate_refuses_a_pickle_model_with_exit_2_unless_trusted(
    pickle_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["generate", str(pickle_model), "--prompt", "hi", "--max-new-tokens", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(pickle_model) in err and TRUST_PICKLE_ENV in err and "Traceback" not in err
    monkeypatch.setenv(TRUST_PICKLE_ENV, "1")
    assert main(argv) == 0


def test_train_refuses_a_pickle_model_unless_the_config_trusts_it(
    pickle_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_chat_data(tmp_path / "d.jsonl", n=16)
    cfg = write_config(tmp_path, pickle_model, data, train={"max_steps": 1, "save_every": None})
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert str(pickle_model) in err and "model.trust_pickle" in err
    assert main(["train", str(cfg), "model.trust_pickle=true", "train.run_name=trusted"]) == 0
    assert (tmp_path / "runs" / "trusted" / "final" / "adapter_model.safetensors").is_file()


def _adapter(base_dir: Path, out: Path, safe: bool) -> Path:
    base = AutoModelForCausalLM.from_pretrained(str(base_dir))
    torch.manual_seed(0)
    config = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(str(out), safe_serialization=safe)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (base_dir / name).is_file():
            shutil.copy(base_dir / name, out / name)
    return out


@pytest.fixture(scope="module")
def pickle_adapter(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = _adapter(tiny_llama, tmp_path_factory.mktemp("adapter") / "pickled", safe=False)
    assert (out / "adapter_model.bin").is_file()
    assert not list(out.glob("*.safetensors"))
    return out


def _lora(model: Any) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if "lora_" in k}


def test_a_pickle_only_adapter_is_refused_unless_trusted(
    pickle_adapter: Path, tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(PickleWeightsError) as err:
        load_for_inference(str(pickle_adapter), device="cpu")
    assert str(pickle_adapter) in str(err.value) and "adapter_model.bin" in str(err.value)
    # the base alone (no adapter) is safetensors: it still loads
    load_for_inference(str(pickle_adapter), use_adapter=False, device="cpu")

    safe = _adapter(tiny_llama, tmp_path / "safe", safe=True)
    expected = _lora(
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_llama)), str(safe))
    )
    model, _ = load_for_inference(str(pickle_adapter), device="cpu", trust_pickle=True)
    got = _lora(model)
    assert got.keys() == expected.keys() and got
    assert all(torch.equal(got[k], expected[k]) for k in got)
    monkeypatch.setenv(TRUST_PICKLE_ENV, "1")
    load_for_inference(str(pickle_adapter), device="cpu")


def test_merge_and_serve_refuse_a_pickle_only_adapter(pickle_adapter: Path) -> None:
    from tunesmith.merge.lora import merge_run
    from tunesmith.serve.adapters import adapter_dir
    from tunesmith.serve.errors import APIError

    with pytest.raises(PickleWeightsError):
        merge_run(str(pickle_adapter), device="cpu")
    with pytest.raises(APIError) as err:
        adapter_dir(pickle_adapter)
    assert err.value.status == 400 and TRUST_PICKLE_ENV in str(err.value.message)
    assert str(pickle_adapter) not in str(err.value.message)


def test_checkpoint_state_round_trips_under_weights_only(
    tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tunesmith.engine.checkpoint import load_state, load_trainable, save_checkpoint

    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"]))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(input_ids=torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss.backward()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    optimizer.step()
    scheduler.step()
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("{}\n")
    train_state = {"step": 3, "epoch": 0, "position": [1, 2], "losses": [0.5], "tag": None}
    ckpt = save_checkpoint(run, 3, model, optimizer, scheduler, train_state, keep_last=2)
    state = load_state(ckpt)  # torch.load(weights_only=True) inside
    assert state["train"] == train_state
    assert torch.equal(state["rng"][0]["torch"], torch.get_rng_state())
    assert state["optimizer"]["state"] and state["scheduler"]["last_epoch"] == 1

    # weights_only really is on: a pickled object outside the allowlist is refused
    torch.save({"x": argparse.Namespace(a=1)}, ckpt / "state.pt")
    with pytest.raises(Exception, match=r"[Ww]eights only"):
        load_state(ckpt)

    # a checkpoint whose adapter weights are pickle only: refused, unless trusted
    saved = load_file(str(ckpt / "adapter_model.safetensors"))
    (ckpt / "adapter_model.safetensors").unlink()
    torch.save(saved, ckpt / "adapter_model.bin")
    fresh = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(tiny_llama)),
        LoraConfig(r=2, target_modules=["q_proj"]),
    )
    with pytest.raises(PickleWeightsError):
        load_trainable(fresh, ckpt)
    assert not all(torch.equal(v, _lora(fresh)[k]) for k, v in _lora(model).items())
    monkeypatch.setenv(TRUST_PICKLE_ENV, "1")
    load_trainable(fresh, ckpt)
    assert all(torch.equal(v, _lora(fresh)[k]) for k, v in _lora(model).items())
