"""`tunesmith train` runs each method's cheap pre-flight checks before training (issue #13, 4).

For every method, one input its pre-flight FAILs on, through the real CLI: `train` exits 2 (a
:class:`~tunesmith.checks.preflight.PreflightError` is a user error) naming the failing check,
and nothing is trained (the refused run leaves no run dir); the same command with
``--skip-preflight`` trains. classify is the exception: every input its label pre-flight FAILs on
is refused earlier by the reader or later by the encoder (see its test), so there is nothing for
``--skip-preflight`` to override.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.runs import write_config
from tests.methods.test_classify import config_file as classify_config
from tests.methods.test_dpo import write_dpo_config
from tests.methods.test_ppo import ppo_config, train_toy_reward_model
from tunesmith.cli import main

REFUSED = "tunesmith: error: pre-flight checks failed:"


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], run_dir: Path) -> str:
    """Run ``tunesmith train``, assert it refuses (exit 2) before training; return stderr."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert not (run_dir / "metrics.jsonl").exists() and not (run_dir / "final").exists()
    assert not run_dir.exists()  # Run.preparing() removes the fresh run dir it refused
    return err


def _preflight_refused(
    cfg: Path, capsys: pytest.CaptureFixture[str], run_dir: Path, check: str
) -> str:
    err = _refused(["train", str(cfg)], capsys, run_dir)
    assert REFUSED in err, err
    assert f"  FAIL {check}: " in err, err
    assert "--skip-preflight" in err and "tunesmith doctor" in err
    return err


def _trains_when_told(cfg: Path, run_dir: Path, steps: int) -> None:
    """``--skip-preflight`` trains: exit 0, ``steps`` train records, an exported final/."""
    assert main(["train", str(cfg), "--skip-preflight"]) == 0
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("split", "train") == "train"] == list(
        range(1, steps + 1)
    )
    assert (run_dir / "final" / "tunesmith_config.yaml").is_file()


# ----------------------------------------------------------------------------- sft


def test_sft_refuses_a_doubled_bos_unless_told(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Texts that already start with the BOS text: the tokenizer adds a second BOS.
    data = _write(tmp_path / "t.jsonl", [{"text": f"<s>The quick fox {i}."} for i in range(8)])
    cfg = write_config(tmp_path, tiny_llama, data, train={"max_steps": 1})
    run_dir = tmp_path / "runs" / "run"
    err = _preflight_refused(cfg, capsys, run_dir, "bos")
    assert "doubled BOS" in err and "t.jsonl:1" in err
    _trains_when_told(cfg, run_dir, 1)


# ----------------------------------------------------------------------------- dpo, reward

LONG = "Yes, the sea is near the sun and the wind and the dog, " * 8


def _pairs_equal_after_truncation(path: Path) -> Path:
    """Eight pairs; in the last one the replies differ only past max_length 128."""
    words = ["sea", "sun", "wind", "dog", "fox", "Paris", "water"]
    rows = [
        {"prompt": f"Is the {w} near?", "chosen": f"Yes, the {w} is near.", "rejected": "No."}
        for w in words
    ]
    rows.append({"prompt": "Is it near?", "chosen": LONG + "A.", "rejected": LONG + "B."})
    return _write(path, rows)


def test_dpo_refuses_pairs_identical_after_truncation_unless_told(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _pairs_equal_after_truncation(tmp_path / "pairs.jsonl")
    cfg = write_dpo_config(tmp_path, tiny_llama, data, train={"max_steps": 2})
    values = yaml.safe_load(cfg.read_text())
    values["data"].update(max_length=128, val_fraction=0.0)
    cfg.write_text("# tunesmith train dpo.yaml\n" + yaml.safe_dump(values))
    run_dir = tmp_path / "runs" / "run"
    err = _preflight_refused(cfg, capsys, run_dir, "identical")
    assert "1 of 8 pairs" in err and "pairs.jsonl:8" in err
    _trains_when_told(cfg, run_dir, 2)


def test_reward_refuses_pairs_identical_after_truncation_unless_told(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _pairs_equal_after_truncation(tmp_path / "pairs.jsonl")
    cfg = write_config(
        tmp_path,
        tiny_llama,
        data,
        data={"max_length": 128, "val_fraction": 0.0},
        train={"max_steps": 2},
    )
    cfg.write_text(cfg.read_text() + "method: reward\n")  # a causal-LM backbone
    run_dir = tmp_path / "runs" / "run"
    err = _preflight_refused(cfg, capsys, run_dir, "identical")
    assert "1 of 8 pairs" in err and "pairs.jsonl:8" in err
    _trains_when_told(cfg, run_dir, 2)


# ----------------------------------------------------------------------------- grpo


def crashes_on_answer_tags(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
    """A reward with a parsing bug: it raises on a well-formed ``<answer>`` reply (which the
    pre-flight tries), never on what a random tiny policy writes."""
    if any("<answer>" in c for c in completions):
        raise ValueError("unparsable answer")
    return [0.0] * len(completions)


def test_grpo_refuses_a_reward_that_raises_unless_told(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [{"prompt": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(6)]
    data = _write(tmp_path / "prompts.jsonl", rows)
    cfg = {
        "method": "grpo",
        "model": {"name_or_path": str(tiny_llama)},
        "data": {"train": str(data), "val_fraction": 0.0},
        "train": {
            "output_dir": str(tmp_path / "runs"),
            "run_name": "run",
            "max_steps": 1,
            "micro_batch_size": 4,
            "precision": "fp32",
            "seed": 0,
        },
        "lora": {"dropout": 0.0, "r": 4},
        "grpo": {
            "num_generations": 2,
            "prompts_per_step": 2,
            "max_new_tokens": 4,
            "inner_steps": 1,
            "eval_before": False,
        },
        "rewards": [
            {"name": "math"},
            {"name": f"{__name__}:crashes_on_answer_tags", "label": "parser"},
        ],
    }
    path = tmp_path / "grpo.yaml"
    path.write_text("# tunesmith train grpo.yaml\n" + yaml.safe_dump(cfg))
    run_dir = tmp_path / "runs" / "run"
    err = _preflight_refused(path, capsys, run_dir, "rewards")
    assert "reward 'parser' raised ValueError" in err and "prompts.jsonl:1" in err
    _trains_when_told(path, run_dir, 1)


# ----------------------------------------------------------------------------- ppo


def test_ppo_refuses_generation_beyond_the_context_unless_told(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "rm").mkdir()
    rm, prompts = train_toy_reward_model(tmp_path / "rm", tiny_llama)
    # The tiny policy with a 72-position context: a 66-68 token prompt + 6 new tokens overflow.
    policy = tmp_path / "short-context"
    shutil.copytree(tiny_llama, policy)
    config = json.loads((policy / "config.json").read_text())
    (policy / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 72}))
    cfg = ppo_config(
        tmp_path,
        policy,
        prompts,
        rm,
        train={"max_steps": 1},
        ppo={"prompts_per_iteration": 2, "minibatch_size": 2, "epochs": 1},
    )
    run_dir = tmp_path / "runs" / "run"
    err = _preflight_refused(cfg, capsys, run_dir, "context")
    assert "+ max_new_tokens 6 = 74 > the model's context 72 positions" in err
    _trains_when_told(cfg, run_dir, 1)


# ----------------------------------------------------------------------------- classify


def test_classify_refuses_a_text_holding_the_pad_token_even_when_told(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """classify's label pre-flight cannot FAIL in `train`: fewer than two labels and unseen
    held-out labels are refused by the reader (LabelError), and the padding check is run by the
    encoder as a hard error (the classifier would pool at the wrong token). The refusal holds
    with --skip-preflight too: training on such a text is wrong, not merely risky."""
    cfg = classify_config(tmp_path, tiny_llama, "head", train={"max_steps": 1})
    with (tmp_path / "train.jsonl").open("a") as fh:
        fh.write(json.dumps({"body": "done <|im_end|>", "topic": "billing"}) + "\n")
    run_dir = tmp_path / "runs" / "head"
    for extra in ([], ["--skip-preflight"]):
        err = _refused(["train", str(cfg), *extra], capsys, run_dir)
        assert "train.jsonl:25" in err and "padding token '<|im_end|>'" in err, err
