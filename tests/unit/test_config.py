from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.cli import recipes_dir
from tunesmith.config import ConfigError, SFTConfig, load_config

BASE = "data:\n  train: data.jsonl\n"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_defaults_and_overrides_are_typed(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, BASE),
        ["lora.r=8", "optim.lr=1e-3", "train.resume=true", "lora.target_modules=[q_proj, k_proj]"],
    )
    assert isinstance(cfg, SFTConfig)
    assert cfg.lora.r == 8 and cfg.optim.lr == 1e-3 and cfg.train.resume is True
    assert cfg.lora.target_modules == ["q_proj", "k_proj"]
    assert cfg.data.train_on == "assistant"


def test_unknown_key_names_line_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "optim:\n  lr: 0.001\n  warmup_step: 10\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert f"{path}:5" in msg
    assert "unknown key 'optim.warmup_step'" in msg
    assert "did you mean 'optim.warmup_steps'" in msg


def test_unknown_section_suggests(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        load_config(write(tmp_path, BASE + "trian:\n  max_steps: 3\n"))


def test_unknown_override_key_suggests(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'lora\.rank'.*did you mean 'lora\.r'"):
        load_config(write(tmp_path, BASE), ["lora.rank=4"])


def test_wrong_type_names_field_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "train:\n  micro_batch_size: lots\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert f"{path}:4" in str(e.value) and "train.micro_batch_size" in str(e.value)


def test_bad_literal_and_missing_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.train_on"):
        load_config(write(tmp_path, BASE + "  train_on: everything\n"))
    with pytest.raises(ConfigError, match="field 'data': Field required"):
        load_config(write(tmp_path, "train:\n  max_steps: 3\n"))


def test_unknown_method_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'sft'"):
        load_config(write(tmp_path, "method: stf\n" + BASE))
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(write(tmp_path, "data: [unclosed\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_malformed_override(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"expected key\.sub=value"):
        load_config(write(tmp_path, BASE), ["lora.r"])


def test_top_layers_needs_full(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"trainable_top_layers needs adapter\.type=full"):
        load_config(write(tmp_path, BASE), ["train.trainable_top_layers=1"])


def test_every_shipped_recipe_validates() -> None:
    """Training recipes validate as training configs; configs/prep/ holds `tunesmith prep`
    recipes, validated by the prep tests."""
    recipes = sorted(recipes_dir().rglob("*.yaml"))
    assert recipes, "no recipes found"
    for path in recipes:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# tunesmith "), f"{path}: first line must be the command"
        if path.relative_to(recipes_dir()).parts[0] != "prep":
            load_config(path)


def test_unknown_key_inside_an_optional_section_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "  replay: {path: b.jsonl, fraction: 0.1, fromat: text}\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert f"{path}:3" in msg
    assert "did you mean 'data.replay.format'" in msg
