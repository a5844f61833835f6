"""``tunesmith compare``: the same suite on two models, side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.eval.compare import compare_results


def test_compare_base_against_trained_run(
    tmp_path: Path, trained_run: Path, gen_suite: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp.json"
    argv = ["compare", str(trained_run), str(trained_run), "--suite", str(gen_suite)]
    assert main([*argv, "--a-no-adapter", "--output", str(out), "--top", "3"]) == 0
    printed = capsys.readouterr().out
    assert "B win rate" in printed and "Examples that differ most" in printed
    cmp = json.loads(out.read_text())
    pairs = cmp["examples"]
    assert len(pairs) == 8 and {"prediction_a", "prediction_b", "winner"} <= set(pairs[0])
    overall = cmp["overall"]
    # every pair is counted once, as a win for A, a win for B, or a tie
    assert overall["wins_a"] + overall["wins_b"] + overall["ties"] == 8
    assert overall["wins_b"] == sum(p["score_b"] > p["score_a"] for p in pairs)
    assert overall["wins_b"] > overall["wins_a"]  # the tuned adapter beats its base on its task
    lo, hi = overall["win_rate_b_ci95"]
    assert lo <= overall["win_rate_b"] <= hi
    top = cmp["most_different"]
    assert len(top) <= 3 and all(abs(top[0]["delta"]) >= abs(p["delta"]) for p in pairs)


def test_compare_saved_results_pairs_by_id() -> None:
    def result(scores: list[float]) -> dict:
        examples = [
            {"id": f"t:{i}", "prediction": str(s), "scores": {"f1": s}}
            for i, s in enumerate(scores)
        ]
        task = {"primary": "f1", "higher_is_better": True, "metrics": {}, "examples": examples}
        return {"suite": "s", "model": "m", "tasks": {"t": task}}

    cmp = compare_results(result([0.0, 1.0, 0.5, 0.2]), result([1.0, 1.0, 0.0, 0.3]), top=2)
    assert [p["winner"] for p in cmp["examples"]] == ["b", "tie", "a", "b"]
    assert [p["id"] for p in cmp["most_different"]] == ["t:0", "t:2"]  # |delta| 1.0, 0.5
    assert cmp["overall"]["win_rate_b"] == pytest.approx(2 / 3)


def test_compare_loss_tasks_lower_is_better() -> None:
    def result(losses: list[float]) -> dict:
        examples = [{"id": f"l:{i}", "scores": {"loss": v}} for i, v in enumerate(losses)]
        task = {"primary": "loss", "higher_is_better": False, "metrics": {}, "examples": examples}
        return {"suite": "s", "tasks": {"l": task}}

    cmp = compare_results(result([2.0, 1.0]), result([1.5, 1.2]))
    assert [p["winner"] for p in cmp["examples"]] == ["b", "a"]


def test_compare_refuses_different_suites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, suite in (("a.json", "x"), ("b.json", "y")):
        (tmp_path / name).write_text(json.dumps({"suite": suite, "tasks": {}}))
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
    assert "A ran suite 'x', B 'y'" in capsys.readouterr().err
