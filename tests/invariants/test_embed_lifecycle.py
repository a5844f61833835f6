"""Embed on the run lifecycle: a run killed with SIGKILL resumes on the same trajectory (losses,
held-out metrics, final/ and best/ weights) as the run that was never interrupted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers.runs import step_losses, train_subprocess
from tests.methods.test_classify import make_tiny_bert
from tests.methods.test_embed import embed_config
from tunesmith.cli import main
from tunesmith.engine.run import CRASH_ENV


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dropout 0.1: a resumed run must restore the RNG to draw the same masks."""
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert", dropout=0.1)


def val_records(run_dir: Path) -> list[dict[str, float]]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time"} for r in rows if r["split"] == "val"]


def test_killed_embed_run_resumes_on_the_same_trajectory(tmp_path: Path, tiny_bert: Path) -> None:
    cfg = embed_config(
        tmp_path,
        tiny_bert,  # 32 pairs, 8 a step: the 6 steps cover two reshuffles
        embed={"hard_negatives": "mined"},
        train={"max_steps": 6, "save_every": 2, "eval_every": 3},
        optim={"warmup_steps": 2},
    )
    runs = tmp_path / "runs"
    assert main(["train", str(cfg), "train.run_name=whole"]) == 0
    # SIGKILL right after step 3: the last checkpoint is step 2, so step 3 is redone.
    assert train_subprocess(cfg, "train.run_name=crashed", env={CRASH_ENV: "3"}).returncode == -9
    crashed = runs / "crashed"
    assert len(step_losses(crashed)) == 3 and not (crashed / "final").exists()
    assert main(["train", str(cfg), "train.run_name=crashed", "--resume"]) == 0
    a, b = step_losses(runs / "whole"), step_losses(crashed)
    assert len(a) == len(b) == 6
    for x, y in zip(a, b, strict=True):
        assert abs(x - y) < 1e-6
    assert val_records(runs / "whole") == val_records(crashed)  # steps 0 (before), 3, 6
    for out in ("final", "best"):
        wa = load_file(str(runs / "whole" / out / "model.safetensors"))
        wb = load_file(str(crashed / out / "model.safetensors"))
        assert wa.keys() == wb.keys()
        for key in wa:
            assert torch.allclose(wa[key], wb[key], atol=1e-6, rtol=0), key


def test_two_processes_match_one_with_the_same_global_batch(tmp_path: Path) -> None:
    """Embeddings gathered across ranks: two processes at micro-batch 2 see the same in-batch
    and (mined, gathered) hard negatives as one process at 4, so losses and weights agree."""
    bert = make_tiny_bert(tmp_path / "bert", dropout=0.0)  # masks would differ by process
    cfg = embed_config(
        tmp_path, bert, embed={"hard_negatives": "mined"}, train={"max_steps": 3, "eval_every": 3}
    )
    one = train_subprocess(cfg, "train.micro_batch_size=4", "train.run_name=one")
    assert one.returncode == 0, one.stderr[-2000:]
    two = train_subprocess(cfg, "train.micro_batch_size=2", "train.run_name=two", nproc=2)
    assert two.returncode == 0, two.stderr[-3000:]
    runs = tmp_path / "runs"
    rows = {n: [json.loads(x) for x in (runs / n / "metrics.jsonl").read_text().splitlines()]
            for n in ("one", "two")}  # fmt: skip
    a, b = ([r for r in rows[n] if r["split"] == "train"] for n in ("one", "two"))
    assert len(a) == len(b) == 3
    for ra, rb in zip(a, b, strict=True):
        assert ra["examples"] == rb["examples"] == 4
        assert abs(ra["loss"] - rb["loss"]) < 1e-4
        assert abs(ra["in_batch_accuracy"] - rb["in_batch_accuracy"]) < 1e-6
        assert abs(ra["grad_norm"] - rb["grad_norm"]) < 1e-4 * ra["grad_norm"]
    wa = load_file(str(runs / "one" / "final" / "model.safetensors"))
    wb = load_file(str(runs / "two" / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=1e-4, rtol=0), key
    assert val_records(runs / "one")[-1]["ndcg@10"] == pytest.approx(
        val_records(runs / "two")[-1]["ndcg@10"], abs=1e-4
    )
