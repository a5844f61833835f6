"""Multi-task training with replay through the real CLI: the mix is logged, val loss per task."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.runs import train, write_chat_data, write_config


def test_multitask_mix_with_replay(tmp_path: Path, tiny_llama: Path) -> None:
    add = write_chat_data(tmp_path / "add.jsonl", n=32, seed=1)
    more = write_chat_data(tmp_path / "more.jsonl", n=16, seed=2)
    general = write_chat_data(tmp_path / "general.jsonl", n=20, seed=3)
    cfg = write_config(
        tmp_path,
        tiny_llama,
        add,
        data={
            "train": [
                {"path": str(add), "tag": "add", "weight": 0.5},
                {"path": str(more), "tag": "more", "count": 10},
            ],
            "replay": {"path": str(general), "fraction": 0.2},
            "val_fraction": 0.25,
        },
        train={"max_steps": 3, "eval_every": 3},
    )
    run = train(cfg)
    env = json.loads((run / "env.json").read_text())
    assert env["data"]["mix"] == {"add": 12, "more": 10, "replay": 6}
    assert set(env["data_sha256"]) == {str(add), str(more), str(general)}
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r["split"] == "val"][-1]
    assert set(val["val_loss_by_tag"]) == {"add", "more"}
    lo, hi = sorted(val["val_loss_by_tag"].values())
    assert lo <= val["val_loss"] <= hi  # the overall loss is a token-weighted mean of the tasks
