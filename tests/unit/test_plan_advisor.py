"""The fine-tune / RAG / few-shot / structured-output advisor, its data facts and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.plan.advisor import Facts, advise
from tunesmith.plan.datafacts import data_facts


def fired(facts: Facts) -> tuple[str, list[str]]:
    a = advise(facts)
    return a.recommendation, [r.name for r in a.rules]


def test_few_examples_favour_few_shot() -> None:
    assert fired(Facts(examples=200)) == ("few-shot", ["few-examples"])


def test_enough_examples_favour_fine_tuning() -> None:
    assert fired(Facts(examples=2000)) == ("fine-tune", ["enough-examples"])


def test_fresh_knowledge_outweighs_example_count() -> None:
    rec, rules = fired(Facts(examples=2000, knowledge_changes_often=True))
    assert rec == "rag" and rules == ["fresh-knowledge", "enough-examples"]


def test_format_only_needs_constrained_decoding() -> None:
    assert fired(Facts(examples=5000, format_only=True))[0] == "structured-output"


def test_latency_goal_tips_toward_fine_tuning_only_with_data() -> None:
    assert fired(Facts(examples=800, low_latency=True))[0] == "fine-tune"
    # 300 examples: few-shot +2 against fine-tune +1
    assert fired(Facts(examples=300, low_cost=True)) == (
        "few-shot",
        ["few-examples", "latency-cost"],
    )


def test_missing_eval_set_is_a_prerequisite_that_does_not_vote() -> None:
    a = advise(Facts(examples=2000, has_eval_set=False))
    assert a.recommendation == "fine-tune"
    assert len(a.prerequisites) == 1 and "build one first" in a.prerequisites[0]


def test_no_facts_starts_with_few_shot() -> None:
    assert fired(Facts()) == ("few-shot", ["no-signal"])


def test_duplicates_rule() -> None:
    assert "duplicates" in fired(Facts(examples=900, duplicate_fraction=0.1))[1]
    assert "duplicates" not in fired(Facts(examples=900, duplicate_fraction=0.01))[1]


def _chat(user: str, reply: str) -> str:
    msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    return json.dumps({"messages": msgs})


def test_data_facts_counts_lengths_json_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    # texts are "user\nreply": 8 + 1 + 7 = 16 chars -> 4 tokens (chars/4); 40 + 1 + 11 -> 13
    bad, good, longer = '{"x": 1', '{"x":1}', '{"y":[1,2]}'  # 7, 7 and 11 chars
    lines = [_chat("a" * 8, bad), _chat("a" * 8, good), _chat("b" * 40, longer)]
    lines.append(lines[1])  # one exact duplicate of four
    path.write_text("\n".join(lines) + "\n")
    f = data_facts(path)
    assert f.examples == 4
    assert f.duplicate_fraction == pytest.approx(0.25)
    assert (f.tokens_p50, f.tokens_max, f.counted_with) == (4, 13, "chars/4")
    assert f.seq_len == 64
    assert f.json_replies == pytest.approx(3 / 4)  # the first reply does not parse
    assert not f.format_only


def test_cli_plan_memory_and_best_fit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "7B", "--method", "full", "--device-gib", "80"]) == 0
    out = capsys.readouterr().out
    assert "does NOT fit in 80 GiB" in out
    assert "best fitting configuration in 80 GiB: full" in out and "adamw8bit" in out


def _cli_estimate(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["plan", "7B", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)["estimate"]


def test_cli_plan_optimizer_kernel_and_lora_dropout(capsys: pytest.CaptureFixture[str]) -> None:
    fused = _cli_estimate(capsys, "--method", "full", "--optim-impl", "fused")
    foreach = _cli_estimate(capsys, "--method", "full", "--optim-impl", "foreach")
    assert fused["setup"]["optimizer_impl"] == "fused"
    assert foreach["setup"]["optimizer_impl"] == "foreach"
    # foreach AdamW's sqrt(v) temporary only exists in its step phase
    assert foreach["peak"] > fused["peak"]
    plain = _cli_estimate(capsys, "--method", "lora", "--lora-dropout", "0")
    dropped = _cli_estimate(capsys, "--method", "lora", "--lora-dropout", "0.1")
    assert dropped["setup"]["lora_dropout"] == 0.1
    assert dropped["bytes"]["activations"] > plain["bytes"]["activations"]
    assert main(["plan", "7B", "--method", "lora", "--lora-dropout", "1.5"]) == 2
    assert "--lora-dropout) must be in [0, 1), got 1.5" in capsys.readouterr().err


def test_cli_plan_data_fills_in_facts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(_chat(f"item {i}", json.dumps({"id": i})) for i in range(30)) + "\n")
    assert main(["plan", "--data", str(path), "--eval-set", "no", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["data"]["examples"] == 30
    names = [r["name"] for r in out["advice"]["rules"]]
    assert names == ["no-eval-set", "format-only", "few-examples"]
    assert out["advice"]["recommendation"] == "structured-output"


def test_cli_plan_without_anything_is_a_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan"]) == 2
    assert "give a model" in capsys.readouterr().err
