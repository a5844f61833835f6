"""Load what an evaluation runs on, failing early with the run's name when its base is gone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError
from tunesmith.models.load import ALIASES, HF_ID, find_weights_dir, load_for_inference


class MissingBaseError(UserError):
    """A run's adapter names a base model that is no longer there."""


def _recorded_base(weights: Path) -> tuple[str | None, str]:
    """(base model the adapter was trained on, where that is written)."""
    from tunesmith.engine.rundir import saved_setting

    name = saved_setting(weights, "model.name_or_path")
    if name:
        return str(name), str(weights / "tunesmith_config.yaml")
    info = json.loads((weights / "adapter_config.json").read_text())
    return info.get("base_model_name_or_path"), str(weights / "adapter_config.json")


def check_base_present(target: str) -> None:
    """Raise :class:`MissingBaseError` naming the run and the missing base when ``target`` is a
    run (or adapter) whose base model is neither an alias, a Hugging Face id nor an existing
    path."""
    weights = find_weights_dir(target)
    if weights is None or not (weights / "adapter_config.json").is_file():
        return
    info = json.loads((weights / "adapter_config.json").read_text())
    peft_base = info.get("base_model_name_or_path")
    if peft_base and Path(peft_base).expanduser().is_dir():
        return
    base, where = _recorded_base(weights)
    if base is None:
        raise MissingBaseError(f"{target}: the adapter in {weights} names no base model")
    if base in ALIASES or HF_ID.fullmatch(base) or Path(base).expanduser().exists():
        return
    raise MissingBaseError(
        f"{target}: the base model of this run is missing: {base} (recorded in {where}); "
        "restore it there, or evaluate a merged export (`tunesmith export`) instead"
    )


def load_eval_model(target: str, use_adapter: bool = True, device: str = "auto") -> tuple[Any, Any]:
    """(model, tokenizer) for evaluation: a run dir (its ``final/``), a model dir or an alias."""
    check_base_present(target)
    return load_for_inference(target, use_adapter=use_adapter, device=device)
