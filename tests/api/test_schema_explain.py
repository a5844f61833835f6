"""The config explains itself: committed JSON Schemas are current, every recipe validates
against its schema and points to it, and ``explain`` reads the pydantic fields."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.helpers.runs import REPO
from tunesmith.cli import main, recipes_dir
from tunesmith.config import ConfigError
from tunesmith.config.schema import (
    MODELINE,
    explain,
    json_schema,
    recipe_schema_name,
    schema_names,
    schema_text,
)

SCHEMAS = REPO / "schemas"
RECIPES = sorted(recipes_dir().rglob("*.yaml"))


@pytest.mark.parametrize("name", schema_names())
def test_committed_schema_is_current(name: str) -> None:
    path = SCHEMAS / f"{name}.schema.json"
    assert path.is_file(), f"missing {path}: run `tunesmith validate --schema all --out schemas`"
    assert path.read_text(encoding="utf-8") == schema_text(name), (
        f"{path} is stale: run `tunesmith validate --schema all --out schemas`"
    )


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(recipes_dir())))
def test_recipe_validates_against_its_schema_and_points_to_it(recipe: Path) -> None:
    name = recipe_schema_name(recipe)
    lines = recipe.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# tunesmith "), "a recipe starts with the command that runs it"
    modelines = [line for line in lines if line.startswith(MODELINE)]
    assert len(modelines) == 1, f"{recipe}: one `{MODELINE}...` line"
    target = (recipe.parent / modelines[0][len(MODELINE) :]).resolve()
    assert target == (SCHEMAS / f"{name}.schema.json").resolve()
    jsonschema.Draft202012Validator(json_schema(name)).validate(yaml.safe_load("\n".join(lines)))


def test_schema_rejects_what_the_loader_rejects() -> None:
    validator = jsonschema.Draft202012Validator(json_schema("sft"))
    good = {"data": {"train": "a.jsonl"}, "lora": {"r": 8}}
    assert validator.is_valid(good)
    assert validator.is_valid({"data": {"train": ["a.jsonl", {"path": "b.jsonl", "weight": 2}]}})
    assert not validator.is_valid({**good, "lora": {"rank": 8}})  # unknown key
    assert not validator.is_valid({**good, "lora": {"r": 0}})  # ge=1
    assert not validator.is_valid({**good, "train": {"precision": "fp8"}})  # not allowed
    assert not validator.is_valid({"lora": {"r": 8}})  # data is required


def test_validate_schema_cli_writes_a_loadable_schema(tmp_path: Path) -> None:
    out = tmp_path / "dpo.schema.json"
    assert main(["validate", "--schema", "dpo", "--out", str(out)]) == 0
    schema = json.loads(out.read_text())
    assert schema["properties"]["method"]["const"] == "dpo"
    assert "beta" in schema["$defs"]["DPOSection"]["properties"]
    assert main(["validate", "--schema", "all", "--out", str(tmp_path / "all")]) == 0
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == sorted(
        f"{n}.schema.json" for n in schema_names()
    )
    assert main(["validate", "--schema", "sfft"]) == 2  # unknown method: a clear error


def test_explain_reports_type_default_allowed_and_description(
    capsys: pytest.CaptureFixture[str],
) -> None:
    precision = explain("train.precision")
    assert (precision.method, precision.type, precision.default) == ("sft", "str", "auto")
    assert precision.allowed is not None and "bf16" in precision.allowed
    rank = explain("lora.r", "sft")
    assert rank.type == "int" and rank.default == 16 and rank.constraints == {"ge": 1}
    assert "LoRA rank" in rank.description
    beta = explain("dpo.beta")  # not an sft key: found in the method that has it
    assert beta.method == "dpo" and beta.default == 0.1
    assert explain("data").fields is not None and "packing" in (explain("data").fields or [])
    with pytest.raises(ConfigError, match=r"did you mean 'lora\.alpha'"):
        explain("lora.alph", "sft")
    assert main(["explain", "optim.lr", "--method", "dpo"]) == 0
    out = capsys.readouterr().out
    assert "optim.lr  (method dpo)" in out and "type:        float" in out
    assert main(["explain", "dpo.beta", "--method", "sft"]) == 2


def test_explain_and_schema_reach_every_registered_method() -> None:
    from tunesmith.config.load import METHODS

    for method in METHODS:  # a method added to METHODS gets both for free
        assert explain("train.output_dir", method).method == method
        assert json_schema(method)["title"] == f"tunesmith {method} config"
