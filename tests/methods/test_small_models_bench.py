"""``benchmarks/small_models.py`` end to end on a tiny model: teacher (demo recipe) -> merged ->
pruned -> healed by distillation -> GGUF q8_0, each row measured and written."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "small_models.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("small_models", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_models_pipeline_on_tiny_model(
    tiny_llama: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _script()
    out = tmp_path / "small.json"
    argv = [
        "--model",
        str(tiny_llama),
        "--drop-layers",
        "1",
        "--teacher-steps",
        "2",
        "--heal-steps",
        "2",
        "--examples",
        "3",
        "--max-length",
        "256",
        "--no-llama-cpp",
        "--out",
        str(out),
    ]
    assert script.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["layers"] == [2, 1] and len(result["dropped"]) == 1
    teacher, pruned, healed, gguf = result["rows"]
    assert "teacher" in teacher["model"] and "GGUF q8_0" in gguf["model"]
    assert pruned["parameters"] < teacher["parameters"]  # one block fewer
    assert healed["parameters"] == pruned["parameters"] == gguf["parameters"]
    assert pruned["file_bytes"] < teacher["file_bytes"]
    assert gguf["file_bytes"] < healed["file_bytes"]  # 8-bit blocks vs float32 safetensors
    for row in result["rows"]:
        assert 0.0 <= row["held_out_exact_json"] <= 1.0 and row["greedy_tokens_per_s"] > 0
    assert result["heal_steps"] == 2 and result["wall"]["heal_seconds"] > 0
    assert len(result["load_average_start_end"]) == 2
    capsys.readouterr()
    assert script.main(["--table", str(out)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| Model |") and len(table) == 2 + 4


def test_pruned_student_recipe_is_a_distill_config() -> None:
    from tunesmith.config import load_config

    cfg = load_config(
        SCRIPT.parents[1] / "configs/smollm2-135m-instruct/distill_pruned_student.yaml"
    )
    assert cfg.method == "distill" and cfg.adapter.type == "full"
