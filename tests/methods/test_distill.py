"""`method: distill` through the real CLI on tiny models: the held-out KL to the teacher falls,
on-policy steps sample and train, a student given as an adapter run starts from its merge, and
bad pairs or keys are refused before anything is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from tests.helpers.runs import train, write_chat_data, write_config
from tests.helpers.tiny_model import tiny_config
from tests.helpers.tiny_tokenizer import make_tiny_tokenizer
from tunesmith.cli import main
from tunesmith.config import ConfigError, load_config


def metrics(run_dir: Path, split: str) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("split") == split]


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    """A LoRA SFT run of the tiny model on the chat task: the teacher, as a run directory."""
    root = tmp_path_factory.mktemp("teacher")
    data = write_chat_data(root / "chat.jsonl", n=32)
    cfg = write_config(root, tiny_llama, data, train={"max_steps": 6}, optim={"lr": 2e-2})
    return train(cfg)


def write_distill_config(
    tmp_path: Path, student: Path | str, teacher: Path | str, **sections: Any
) -> Path:
    data = write_chat_data(tmp_path / "chat.jsonl", n=32, seed=1)
    cfg: dict[str, Any] = {
        "method": "distill",
        "model": {"name_or_path": str(student)},
        "data": {"train": str(data), "max_length": 96, "val_fraction": 0.25},
        "train": {
            "output_dir": str(tmp_path / "runs"),
            "run_name": "run",
            "max_steps": 4,
            "micro_batch_size": 4,
            "seed": 3,
            "precision": "fp32",
        },
        "optim": {"lr": 1e-2},
        "lora": {"dropout": 0.0},
        "distill": {"teacher": str(teacher)},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    path = tmp_path / "distill.yaml"
    path.write_text("# tunesmith train distill.yaml\n" + yaml.safe_dump(cfg))
    return path


def test_off_policy_distillation_lowers_the_held_out_kl(
    tmp_path: Path, tiny_llama: Path, teacher_run: Path
) -> None:
    cfg = write_distill_config(
        tmp_path,
        tiny_llama,
        teacher_run,
        train={"max_steps": 8, "eval_every": 8},
        distill={"loss": "forward_kl", "temperature": 2.0, "hard_weight": 0.2, "chunk_size": 7},
    )
    run = train(cfg)
    val = metrics(run, "val")
    assert [m["step"] for m in val] == [0, 8]
    assert val[1]["kl"] < 0.8 * val[0]["kl"], val  # the student moved toward the teacher
    assert val[1]["loss"] < val[0]["loss"]
    steps = metrics(run, "train")
    assert len(steps) == 8 and all(m["on_policy"] == 0.0 for m in steps)
    assert (run / "final" / "adapter_model.safetensors").is_file()
    env = json.loads((run / "env.json").read_text())
    assert env["teacher"] == str(teacher_run)
    # lineage: the student's weights and the teacher's final/ by hash, the teacher's node a parent
    node = json.loads((run / "lineage.json").read_text())
    roles = {i["role"]: i["path"] for i in node["inputs"]}
    assert roles["teacher"].startswith(str(teacher_run / "final"))
    assert roles["base_model"].startswith(str(tiny_llama))
    assert [(p["kind"], p["path"]) for p in node["parents"]] == [
        ("final", str(teacher_run / "final"))
    ]


def test_on_policy_jsd_samples_from_a_student_given_as_an_adapter_run(
    tmp_path: Path, teacher_run: Path
) -> None:
    # the student starts from the teacher run's merged weights; top layer trained in full
    cfg = write_distill_config(
        tmp_path,
        teacher_run,
        teacher_run,
        adapter={"type": "full"},
        train={"max_steps": 3, "trainable_top_layers": 1, "micro_batch_size": 2},
        distill={"loss": "jsd", "beta": 0.3, "lambda": 1.0, "max_new_tokens": 6},
    )
    run = train(cfg)
    assert (run / "student_base" / "config.json").is_file()
    steps = metrics(run, "train")
    assert [m["on_policy"] for m in steps] == [1.0, 1.0, 1.0]
    assert all("ce" not in m for m in steps)  # sampled replies carry no hard label
    assert all(0 < m["trained_tokens"] <= 2 * 6 for m in steps)
    # the student begins as the teacher: its divergence starts at zero
    assert steps[0]["div"] == pytest.approx(0.0, abs=1e-5)
    assert (run / "final" / "model.safetensors").is_file()
    # lineage: the student (the teacher run's final/) is a parent too, recorded once
    node = json.loads((run / "lineage.json").read_text())
    assert {i["role"] for i in node["inputs"]} >= {"base_model", "teacher"}
    assert [p["path"] for p in node["parents"]] == [str(teacher_run / "final")]


def _other_tokenizer_model(root: Path) -> Path:
    """A tiny model whose tokenizer has a different vocabulary."""
    tok = make_tiny_tokenizer(vocab_size=420)
    cfg = tiny_config("llama", len(tok), tok.pad_token_id, tok.eos_token_id, tok.bos_token_id)
    torch.manual_seed(0)
    out = root / "other"
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_a_teacher_with_another_tokenizer_is_refused_naming_both(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = _other_tokenizer_model(tmp_path)
    cfg = write_distill_config(tmp_path, tiny_llama, other)
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "do not share a tokenizer" in err
    assert str(other) in err and str(tiny_llama) in err
    assert not (tmp_path / "runs" / "run").exists()  # refused before anything was written


def test_keys_distill_does_not_read_are_refused(tmp_path: Path, tiny_llama: Path) -> None:
    cfg = write_distill_config(tmp_path, tiny_llama, tiny_llama)
    for override, named in (("train.compile=true", "train.compile"), ("dpo.beta=0.1", "dpo")):
        with pytest.raises(ConfigError, match="for method distill") as e:
            load_config(cfg, [override])
        assert f"unknown key '{named}'" in str(e.value)
    with pytest.raises(ConfigError, match=r"read by distill\.loss=jsd only"):
        load_config(cfg, ["distill.beta=0.2"])
    with pytest.raises(ConfigError, match=r"distill\.lambda is 0"):
        load_config(cfg, ["distill.max_new_tokens=8"])
    with pytest.raises(ConfigError, match=r"distill\.teacher"):
        load_config(cfg, ["distill={}"])
    resolved = load_config(cfg, ["distill.lambda=0.5"])
    assert resolved.distill.on_policy_fraction == 0.5  # type: ignore[attr-defined]


def test_pre_flight_refuses_a_doubled_bos_unless_told(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_distill_config(tmp_path, tiny_llama, tiny_llama, train={"max_steps": 1})
    data = tmp_path / "t.jsonl"  # texts that already start with the BOS text: a second BOS
    data.write_text(
        "".join(json.dumps({"text": f"<s>The quick fox {i}."}) + "\n" for i in range(8))
    )
    args = ["train", str(cfg), f"data.train={data}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "pre-flight checks failed" in err and "doubled BOS" in err
    assert not (tmp_path / "runs" / "run").exists()
    assert main([*args, "--skip-preflight"]) == 0
    assert len(metrics(tmp_path / "runs" / "run", "train")) == 1


def test_doctor_checks_the_records_and_the_teacher_tokenizer(
    tmp_path: Path, tiny_llama: Path, teacher_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    html = tmp_path / "doctor.html"
    good = write_distill_config(tmp_path, tiny_llama, teacher_run)
    assert main(["doctor", str(good), "--html", str(html), "--examples", "1"]) == 0
    out = capsys.readouterr().out
    assert "PASS  tokenizer" in out or "PASS tokenizer" in out
    bad = write_distill_config(tmp_path, tiny_llama, _other_tokenizer_model(tmp_path))
    assert main(["doctor", str(bad), "--html", str(html)]) == 1
    out = capsys.readouterr().out
    assert "do not share a tokenizer" in out
    assert not (tmp_path / "runs" / "run").exists()  # doctor creates no run dir


def test_early_stopping_keeps_the_lowest_held_out_loss_in_best(
    tmp_path: Path, tiny_llama: Path, teacher_run: Path
) -> None:
    # a learning rate far too high: the held-out loss soon stops improving
    cfg = write_distill_config(
        tmp_path,
        tiny_llama,
        teacher_run,
        train={"max_steps": 30, "eval_every": 1, "early_stopping_patience": 1},
        optim={"lr": 1.0, "schedule": "constant"},
    )
    run = train(cfg)
    val = metrics(run, "val")
    steps = metrics(run, "train")
    assert len(steps) < 30  # stopped early
    losses = {m["step"]: m["loss"] for m in val}
    best_step = min(losses, key=losses.__getitem__)
    assert losses[max(losses)] > losses[best_step]
    assert (run / "best" / "adapter_model.safetensors").is_file()
    final = metrics(run, "final")
    assert final and final[0]["step"] == len(steps)


def test_a_top_k_teacher_cache_with_the_whole_vocabulary_trains_as_the_live_teacher(
    tmp_path: Path, tiny_llama: Path, teacher_run: Path
) -> None:
    vocab = len(make_tiny_tokenizer())
    cfg = write_distill_config(
        tmp_path, tiny_llama, teacher_run, train={"max_steps": 3}, distill={"chunk_size": 5}
    )
    live = train(cfg, "train.run_name=live")
    full = train(cfg, "train.run_name=full", f"distill.cache_top_k={vocab}")
    losses = [m["loss"] for m in metrics(live, "train")]
    assert [m["loss"] for m in metrics(full, "train")] == pytest.approx(losses, abs=1e-5)
    small = train(cfg, "train.run_name=small", "distill.cache_top_k=4")
    (cache_file,) = small.glob("teacher_topk4-*.pt")
    cache = torch.load(cache_file, weights_only=True)
    assert int(cache["k"]) == 4 and cache["values"].shape[1] == 4
    assert int(cache["offsets"][-1]) == cache["values"].shape[0]
    (record,) = metrics(small, "cache")
    assert record["k"] == 4 and 0 < record["teacher_tail_mass"] < 1
