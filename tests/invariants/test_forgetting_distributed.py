"""The forgetting probe and EWC under torchrun (DDP and FSDP): no deadlock, and the same
before/after probe and penalties as one process with the same global batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.runs import train_subprocess, write_chat_data, write_config
from tests.methods.test_forgetting_cli import _probe_files


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_probe_and_ewc_match_one_process(tmp_path: Path, tiny_llama: Path, parallel: str) -> None:
    data = write_chat_data(tmp_path / "d.jsonl", n=40)
    text, tasks = _probe_files(tmp_path)
    cfg = write_config(
        tmp_path,
        tiny_llama,
        data,
        train={"max_steps": 4, "parallel": parallel},
        optim={"lr": 1e-2},
        forgetting={"text": str(text), "tasks": str(tasks), "chunk_tokens": 32, "every": 2},
        regularization={"type": "ewc", "lambda": 1e4, "fisher_batches": 2},
    )
    one = train_subprocess(cfg, "train.micro_batch_size=4", "train.run_name=one")
    assert one.returncode == 0, one.stderr[-2000:]
    two = train_subprocess(cfg, "train.micro_batch_size=2", "train.run_name=two", nproc=2)
    assert two.returncode == 0, two.stderr[-3000:]
    runs = tmp_path / "runs"
    a = json.loads((runs / "one/forgetting.json").read_text())
    b = json.loads((runs / "two/forgetting.json").read_text())
    for when in ("before", "after"):
        assert b[when]["text_ppl"] == pytest.approx(a[when]["text_ppl"], rel=1e-4)
        assert b[when]["task_correct"] == a[when]["task_correct"]
    pa, pb = (
        [json.loads(x) for x in (runs / r / "metrics.jsonl").read_text().splitlines()]
        for r in ("one", "two")
    )
    ra = [r["reg_penalty"] for r in pa if r.get("split") == "train"]
    rb = [r["reg_penalty"] for r in pb if r.get("split") == "train"]
    assert rb == pytest.approx(ra, rel=1e-3, abs=1e-9) and ra[-1] > 0
