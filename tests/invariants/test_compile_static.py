"""``train.compile: static`` (one graph per packed bucket shape) follows the eager trajectory,
and the compile modes are typed: an unknown one is refused before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.runs import step_losses, train, write_chat_data, write_config
from tunesmith.config import ConfigError, load_config
from tunesmith.engine.compile import STATIC_RECOMPILE_LIMIT, compile_layers


def test_static_compile_follows_the_eager_trajectory(tmp_path: Path, tiny_llama: Path) -> None:
    import torch._dynamo.config as dynamo

    data = write_chat_data(tmp_path / "d.jsonl", n=16)
    cfg = write_config(
        tmp_path,
        tiny_llama,
        data,
        train={"max_steps": 2},  # each new bucket shape compiles: keep the shapes few
        optim={"lr": 1e-2},
        data={"packing": True},
    )
    eager = train(cfg, "train.run_name=eager")
    static = train(cfg, "train.run_name=static", "train.compile=static")
    for a, b in zip(step_losses(eager), step_losses(static), strict=True):
        assert abs(a - b) < 1e-4
    assert dynamo.recompile_limit >= STATIC_RECOMPILE_LIMIT  # every bucket keeps its graph


def test_unknown_compile_mode_is_refused(tmp_path: Path, tiny_llama: Path) -> None:
    data = write_chat_data(tmp_path / "d.jsonl", n=4)
    cfg = write_config(tmp_path, tiny_llama, data, train={"compile": "fast"})
    with pytest.raises(ConfigError, match="compile"):
        load_config(cfg)
    with pytest.raises(ValueError, match="compile mode"):
        compile_layers(object(), "fast")
