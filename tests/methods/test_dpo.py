"""DPO end to end on a tiny random model: learning, reference handling, config and data errors."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tunesmith.cli import main
from tunesmith.config import ConfigError, load_config
from tunesmith.data.pair_batches import collate_pairs
from tunesmith.data.preference import PreferencePair, encode_pair
from tunesmith.data.records import Message
from tunesmith.engine.logps import LogpsModule, sequence_logps
from tunesmith.engine.trainable import build_trainable_model
from tunesmith.methods import dpo
from tunesmith.models.load import load_causal_lm, load_tokenizer


def write_pref_data(path: Path, n: int = 48, seed: int = 0) -> Path:
    """A learnable preference: the chosen reply starts with 'Yes', the rejected with 'No'."""
    rng = random.Random(seed)
    words = ["sea", "sun", "wind", "dog", "fox", "Paris", "water", "friend"]
    with path.open("w") as fh:
        for _ in range(n):
            a, b = rng.sample(words, 2)
            row = {
                "prompt": f"Is the {a} near the {b}?",
                "chosen": f"Yes, the {a} is near.",
                "rejected": f"No, the {b} is far.",
            }
            fh.write(json.dumps(row) + "\n")
    return path


def write_dpo_config(tmp_path: Path, model_dir: Path, data: Path, **sections: Any) -> Path:
    cfg: dict[str, Any] = {
        "method": "dpo",
        "model": {"name_or_path": str(model_dir)},
        "data": {"train": str(data), "max_length": 64, "val_fraction": 0.25},
        "train": {
            "output_dir": str(tmp_path / "runs"),
            "run_name": "run",
            "max_steps": 4,
            "micro_batch_size": 4,
            "seed": 3,
            "precision": "fp32",
        },
        "optim": {"lr": 5e-3, "schedule": "constant"},
        "lora": {"dropout": 0.0},
        "dpo": {"beta": 0.5},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    path = tmp_path / "dpo.yaml"
    path.write_text("# tunesmith train dpo.yaml\n" + yaml.safe_dump(cfg))
    return path


def metrics(run_dir: Path, split: str) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("split") == split]


def test_loss_falls_and_held_out_reward_accuracy_rises(tmp_path: Path, tiny_llama: Path) -> None:
    data = write_pref_data(tmp_path / "pref.jsonl")
    cfg = write_dpo_config(tmp_path, tiny_llama, data, train={"max_steps": 12, "eval_every": 6})
    assert main(["train", str(cfg)]) == 0
    run_dir = tmp_path / "runs" / "run"
    train = metrics(run_dir, "train")
    val = metrics(run_dir, "val")
    assert [v["step"] for v in val] == [0, 6, 12]
    # Step 0: the LoRA policy equals its reference, so every implicit reward is exactly 0.
    assert val[0]["margin"] == 0.0 and val[0]["accuracy"] == 0.0
    assert val[0]["loss"] == pytest.approx(0.6931472, abs=1e-5)  # -log sigmoid(0) = log 2
    assert train[-1]["loss"] < train[0]["loss"] - 0.1
    assert val[-1]["accuracy"] >= 0.9 and val[-1]["margin"] > 0.0
    assert val[-1]["loss"] < val[0]["loss"]
    for key in ("rewards/chosen", "rewards/rejected", "kl_proxy", "grad_norm", "lr"):
        assert key in train[-1]
    assert (run_dir / "final" / "adapter_config.json").is_file()
    assert (run_dir / "rejects.jsonl").read_text() == ""


def test_precompute_ref_gives_the_live_first_step_loss(
    tmp_path: Path, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_pref_data(tmp_path / "pref.jsonl", n=24)
    calls: list[int] = []
    live = dpo.Reference.live

    def counting(self: dpo.Reference, batch: dict[str, torch.Tensor], *a: Any) -> Any:
        calls.append(batch["input_ids"].size(0))
        return live(self, batch, *a)

    monkeypatch.setattr(dpo.Reference, "live", counting)
    losses = {}
    for pre in (False, True):
        cfg = write_dpo_config(
            tmp_path,
            tiny_llama,
            data,
            train={"max_steps": 2, "run_name": f"pre-{pre}"},
            lora={"dropout": 0.0},
            dpo={"precompute_ref": pre, "beta": 0.5},
        )
        calls.clear()
        assert main(["train", str(cfg)]) == 0
        run_dir = tmp_path / "runs" / f"pre-{pre}"
        losses[pre] = [m["loss"] for m in metrics(run_dir, "train")]
        if pre:
            # 18 train + 6 held-out pairs, 4 per batch: 5 + 2 reference batches before training,
            # none per step nor in the final held-out evaluation.
            assert len(calls) == 7
            assert len(list(run_dir.glob("ref_logps-*.pt"))) == 1
        else:
            # One live reference forward per step (grad_accum 1), 2 in the final evaluation.
            assert len(calls) == 2 + 2
    assert losses[True][0] == pytest.approx(losses[False][0], abs=1e-5)
    assert losses[True][1] == pytest.approx(losses[False][1], abs=1e-4)


def _pairs(tokenizer: Any) -> dict[str, torch.Tensor]:
    pairs = [
        PreferencePair((Message("user", "Is the sea blue?"),), "Yes, it is.", "No.", "t", 1),
        PreferencePair((Message("user", "Hello!"),), "Good morning, friend.", "Go.", "t", 2),
    ]
    return collate_pairs([encode_pair(p, tokenizer, max_length=64) for p in pairs], 0)


def test_adapter_reference_is_the_base_model(tmp_path: Path, tiny_llama: Path) -> None:
    cfg = load_config(write_dpo_config(tmp_path, tiny_llama, write_pref_data(tmp_path / "p.jsonl")))
    tokenizer = load_tokenizer(tiny_llama)
    batch = _pairs(tokenizer)
    policy = build_trainable_model(cfg, tiny_llama, torch.device("cpu"))
    with torch.no_grad():  # make the adapter matter: LoRA's B starts at zero
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    reference = dpo.Reference("adapter_off", LogpsModule(policy))
    ref = reference.live(batch, "fp32", torch.device("cpu"))
    base = load_causal_lm(tiny_llama, dtype=torch.float32, device=torch.device("cpu")).eval()
    with torch.no_grad():
        want, lengths = sequence_logps(base, batch)
        adapted, _ = sequence_logps(policy.eval(), batch)
        # The head-only path equals log_softmax over the full logits.
        logits = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        targets = batch["labels"][:, 1:]
        keep = targets != -100
        full = torch.log_softmax(logits[:, :-1].float(), -1).gather(
            -1, targets.clamp(min=0).unsqueeze(-1)
        )
    assert torch.allclose(ref, want, atol=1e-5)
    assert not torch.allclose(adapted, want, atol=1e-2)  # the adapter is really on otherwise
    assert torch.allclose((full.squeeze(-1) * keep).sum(1), want, atol=1e-4)
    assert lengths.tolist() == keep.sum(1).tolist()


def test_full_fine_tuning_keeps_a_frozen_reference(tmp_path: Path, tiny_llama: Path) -> None:
    path = write_dpo_config(
        tmp_path,
        tiny_llama,
        write_pref_data(tmp_path / "p.jsonl", n=16),
        adapter={"type": "full"},
        optim={"lr": 1e-3},
    )
    s = dpo.setup(load_config(path))
    frozen = s.reference.module.model
    assert s.reference.kind == "frozen_copy" and frozen is not s.model
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    optimizer, scheduler = s.run.optimizer(s.model, 3)
    steps = [dpo.train_step(s, optimizer, scheduler, [[0, 1, 2, 3]]) for _ in range(3)]
    assert steps[0]["margin"] == 0.0  # the policy starts as its reference
    assert steps[-1]["margin"] != 0.0 and steps[-1]["loss"] < steps[0]["loss"]
    after = frozen.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not all(torch.equal(before[k], v) for k, v in s.model.state_dict().items())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("dpo.beta=0", "dpo.beta must be > 0"),
        ("dpo.beta=-0.1", "dpo.beta must be > 0"),
        ("dpo.betta=0.1", "did you mean 'dpo.beta'"),
        ("dpo.loss=kto", "dpo.loss"),
    ],
)
def test_config_errors_are_clear(
    tmp_path: Path, tiny_llama: Path, override: str, message: str
) -> None:
    path = write_dpo_config(tmp_path, tiny_llama, tmp_path / "missing.jsonl")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(path, [override])


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["train.compile=true"], "'train.compile' for method dpo (it does not read this key)"),
        (["train.stop_after_step=2"], "'train.stop_after_step' for method dpo"),
        (["data.packing=true"], "'data.packing' for method dpo"),
        (["dpo.loss=ipo", "dpo.label_smoothing=0.1"], "dpo.label_smoothing is read by"),
        (["dpo.loss=sigmoid", "dpo.simpo_gamma=1.0"], "dpo.simpo_gamma is read by"),
        (["dpo.loss=simpo", "dpo.precompute_ref=true"], "dpo.precompute_ref: dpo.loss=simpo"),
        (["dpo.layout=padded", "dpo.pack_pairs=true"], "dpo.pack_pairs packs the shared"),
    ],
)
def test_a_field_dpo_does_not_read_is_refused(
    tmp_path: Path,
    tiny_llama: Path,
    capsys: pytest.CaptureFixture[str],
    overrides: list[str],
    named: str,
) -> None:
    cfg = write_dpo_config(tmp_path, tiny_llama, tmp_path / "p.jsonl")
    assert main(["validate", str(cfg)]) == 0
    capsys.readouterr()
    assert main(["validate", str(cfg), *overrides]) == 2
    assert named in capsys.readouterr().err


def test_bad_records_are_rejected_with_a_record(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_pref_data(tmp_path / "pref.jsonl", n=16)
    with data.open("a") as fh:
        fh.write(json.dumps({"prompt": "Same?", "chosen": "Yes.", "rejected": "Yes."}) + "\n")
        fh.write(json.dumps({"prompt": "Empty?", "chosen": "Yes.", "rejected": "  "}) + "\n")
        fh.write(json.dumps({"prompt": "Missing?", "chosen": "Yes."}) + "\n")
    cfg = write_dpo_config(tmp_path, tiny_llama, data, train={"max_steps": 1})
    assert main(["train", str(cfg)]) == 2  # malformed row: stops, naming line and field
    err = capsys.readouterr().err
    assert "pref.jsonl:19: field 'rejected'" in err and "missing" in err
    assert not (tmp_path / "runs" / "run").exists()
    assert main(["train", str(cfg), "data.on_error=skip"]) == 0
    rejects = [
        json.loads(x)
        for x in (tmp_path / "runs" / "run" / "rejects.jsonl").read_text().splitlines()
    ]
    assert [(r["line"], r["rule"]) for r in rejects] == [
        (17, "identical"),
        (18, "empty_rejected"),
        (19, "malformed"),
    ]
    assert rejects[0]["record"] == {"prompt": "Same?", "chosen": "Yes.", "rejected": "Yes."}


@pytest.mark.parametrize(
    ("loss", "reference"),
    [("ipo", "adapter_off"), ("hinge", "adapter_off"), ("simpo", "none"), ("orpo", "none")],
)
def test_every_loss_trains_and_reference_free_ones_skip_the_reference(
    tmp_path: Path, tiny_llama: Path, loss: str, reference: str
) -> None:
    path = write_dpo_config(
        tmp_path,
        tiny_llama,
        write_pref_data(tmp_path / "p.jsonl", n=16),
        dpo={"loss": loss, "beta": 0.5, "precompute_ref": reference != "none"},
    )
    s = dpo.setup(load_config(path))
    assert s.reference.kind == reference
    optimizer, scheduler = s.run.optimizer(s.model, 4)
    steps = [dpo.train_step(s, optimizer, scheduler, [[0, 1, 2, 3]]) for _ in range(4)]
    assert steps[-1]["loss"] < steps[0]["loss"]
    assert ("kl_proxy" in steps[0]) == (reference != "none")


def test_early_stopping_keeps_the_lowest_held_out_loss_in_best(
    tmp_path: Path, tiny_llama: Path
) -> None:
    data = write_pref_data(tmp_path / "p.jsonl", n=24)
    train = {"max_steps": 8, "eval_every": 1, "early_stopping_patience": 1, "micro_batch_size": 2}
    # lr 0.5 overshoots: the held-out loss falls after step 1, then rises at step 2
    cfg = write_dpo_config(tmp_path, tiny_llama, data, train=train, optim={"lr": 0.5})
    assert main(["train", str(cfg)]) == 0
    run_dir = tmp_path / "runs" / "run"
    val = [(m["step"], m["loss"]) for m in metrics(run_dir, "val")]
    assert [s for s, _ in val] == [0, 1, 2]  # stopped after the first evaluation without gain
    assert val[1][1] < val[0][1] and val[2][1] > val[1][1]
    assert metrics(run_dir, "final")[0]["step"] == 2
    best = load_file(str(run_dir / "best" / "adapter_model.safetensors"))
    final = load_file(str(run_dir / "final" / "adapter_model.safetensors"))
    assert (run_dir / "best" / "tunesmith_config.yaml").is_file()
    assert any(not torch.equal(best[k], final[k]) for k in final)


def test_sft_weight_and_likelihood_change_are_logged(tmp_path: Path, tiny_llama: Path) -> None:
    """With dpo.sft_weight the step-0 loss is log 2 (policy = reference) plus w times the chosen
    replies' per-token NLL (> 0); every evaluation logs the log-prob change since step 0."""
    data = write_pref_data(tmp_path / "pref.jsonl", n=24)
    cfg = write_dpo_config(
        tmp_path, tiny_llama, data, train={"max_steps": 2, "eval_every": 1}, dpo={"sft_weight": 1.0}
    )
    assert main(["train", str(cfg)]) == 0
    val = metrics(tmp_path / "runs" / "run", "val")
    assert [v["step"] for v in val] == [0, 1, 2]
    assert val[0]["loss"] > math.log(2) + 0.5  # a random tiny model's NLL is several nats/token
    assert val[0]["logps/chosen_change"] == 0.0 and val[0]["logps/rejected_change"] == 0.0
    for v in val[1:]:
        expected = v["logps/chosen"] - val[0]["logps/chosen"]
        assert v["logps/chosen_change"] == pytest.approx(expected, abs=1e-9)


def test_sft_weight_is_refused_with_orpo(tmp_path: Path, tiny_llama: Path) -> None:
    path = write_dpo_config(tmp_path, tiny_llama, tmp_path / "missing.jsonl")
    with pytest.raises(ConfigError, match="orpo already has an SFT term"):
        load_config(path, ["dpo.loss=orpo", "dpo.sft_weight=1.0"])


def _fake_setup(threshold: float) -> Any:
    cfg = SimpleNamespace(dpo=SimpleNamespace(likelihood_warning=threshold))
    run = SimpleNamespace(state=SimpleNamespace(step=0, method={}))
    return SimpleNamespace(cfg=cfg, run=run, dist=SimpleNamespace(is_main=True))


def test_one_warning_when_the_chosen_likelihood_falls(capsys: pytest.CaptureFixture[str]) -> None:
    s = _fake_setup(2.0)
    change = dpo.likelihood_change(s, {"logps/chosen": -10.7, "logps/rejected": -12.0})
    assert change == {"logps/chosen_change": 0.0, "logps/rejected_change": 0.0}
    s.run.state.step = 10
    dpo.likelihood_change(s, {"logps/chosen": -12.5, "logps/rejected": -15.0})  # fell 1.8
    assert "warning" not in capsys.readouterr().out
    s.run.state.step = 20
    change = dpo.likelihood_change(s, {"logps/chosen": -18.3, "logps/rejected": -22.0})
    assert change["logps/chosen_change"] == pytest.approx(-7.6)
    out = capsys.readouterr().out
    assert "fell by 7.60 nats per sequence since step 0" in out
    assert all(r in out for r in ("dpo.beta", "dpo.sft_weight", "fewer steps"))
    dpo.likelihood_change(s, {"logps/chosen": -25.0, "logps/rejected": -30.0})
    assert "warning" not in capsys.readouterr().out  # once per run
