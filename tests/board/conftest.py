"""A runs folder of tiny real runs for the board's tests (built once per session).

``root/``
  ``sft-a``, ``sft-b``   finished SFT runs (8 and 4 steps), each evaluated on the same suite;
  ``dpo``                a finished DPO run (evaluated every step);
  ``bad-data``           a start refused for its data: ``FAILED`` and ``rejects.jsonl``;
  ``sweep/trials/t0``    sft-b's files with a ``PRUNED`` marker (a sweep trial);
  ``live``               sft-b's config and metrics without ``final/``, modified now (running);
  ``old``                the same, last modified an hour ago (stopped).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers.runs import write_chat_data, write_config
from tests.methods.test_dpo import write_dpo_config, write_pref_data
from tunesmith.cli import main

REPO = Path(__file__).resolve().parents[2]


def _suite(tmp: Path) -> Path:
    suite = tmp / "mc.yaml"
    suite.write_text(yaml.safe_dump({"name": "mc", "tasks": [{
        "name": "mc", "type": "choice", "data": str(REPO / "data/eval/choice.jsonl"),
        "prompt": "{question}", "limit": 6}]}))  # fmt: skip
    return suite


def _partial_copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in ("config.yaml", "env.json", "metrics.jsonl"):
        shutil.copy2(src / name, dst / name)
    return dst


@pytest.fixture(scope="session")
def board_root(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    work = tmp_path_factory.mktemp("board_work")
    root = tmp_path_factory.mktemp("board_runs")
    data = write_chat_data(work / "chat.jsonl", n=32)
    cfg = write_config(work, tiny_llama, data, train={"max_steps": 8, "eval_every": 4})
    suite = _suite(work)
    for name, steps, lr in (("sft-a", 8, "5e-3"), ("sft-b", 4, "1e-3")):
        overrides = [f"train.output_dir={root}", f"train.run_name={name}",
                     f"train.max_steps={steps}", f"optim.lr={lr}"]  # fmt: skip
        assert main(["train", str(cfg), *overrides]) == 0
        assert main(["eval", str(root / name), "--suite", str(suite)]) == 0

    pref = write_pref_data(work / "pref.jsonl", n=16)
    dpo = write_dpo_config(work, tiny_llama, pref, train={"max_steps": 2, "eval_every": 1})
    assert main(["train", str(dpo), f"train.output_dir={root}", "train.run_name=dpo"]) == 0

    bad = work / "bad.jsonl"
    bad.write_text("".join(json.dumps({"messages": i}) + "\n" for i in range(3)))
    assert main(["train", str(cfg), f"train.output_dir={root}", "train.run_name=bad-data",
                 f"data.train={bad}", "data.on_error=skip"]) == 2  # fmt: skip

    trial = _partial_copy(root / "sft-b", root / "sweep" / "trials" / "t0")
    (trial / "PRUNED").write_text("pruned at step 4 by the median pruner\n")
    _partial_copy(root / "sft-b", root / "live")
    old = _partial_copy(root / "sft-b", root / "old")
    hour_ago = time.time() - 3600
    for f in old.iterdir():
        os.utime(f, (hour_ago, hour_ago))
    return root
