"""A tiny trained run shared by the evaluation tests (trained once per session, ~3 s)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.helpers.runs import train, write_chat_data, write_config


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    """40 LoRA steps on the add-two-numbers chat task: replies start 'It is ...'."""
    tmp = tmp_path_factory.mktemp("eval_run")
    cfg = write_config(
        tmp,
        tiny_llama,
        write_chat_data(tmp / "d.jsonl", n=64),
        train={"max_steps": 40, "eval_every": 20},
        optim={"lr": 1e-2},
    )
    return train(cfg)


def write_suite(path: Path, tasks: list[dict], **top: object) -> Path:
    suite = {"name": path.stem, **top, "tasks": tasks}
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


@pytest.fixture()
def gen_suite(tmp_path: Path) -> Path:
    """A generation task on held-out rows of the add-two-numbers task."""
    write_chat_data(tmp_path / "sums.jsonl", n=8, seed=7)
    return write_suite(
        tmp_path / "sums.yaml",
        [{"name": "sums", "data": "sums.jsonl", "metrics": ["f1", "exact_match", "rouge_l"]}],
        generation={"max_new_tokens": 8},
        batch_size=3,
    )
