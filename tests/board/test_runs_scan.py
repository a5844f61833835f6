"""``board.runs``: finding run dirs, their state, best metric and summary, on tiny real runs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tunesmith.board.runs import (
    best_value,
    config_diff,
    find_runs,
    list_runs,
    read_metrics,
    read_rejects,
    run_state,
    summarize,
)


def _names(root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in find_runs(root)]


def test_find_runs_reaches_sweep_trials_and_skips_checkpoints(board_root: Path) -> None:
    names = _names(board_root)
    assert set(names) == {"bad-data", "dpo", "live", "old", "sft-a", "sft-b", "sweep/trials/t0"}
    assert not any("checkpoints" in n or n.endswith(("final", "best")) for n in names)


def test_find_runs_does_not_follow_a_symlink_out(board_root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside-run"
    outside.mkdir()
    (outside / "metrics.jsonl").write_text("")
    link = board_root / "link-out"
    link.symlink_to(outside)
    try:
        assert "link-out" not in _names(board_root)
    finally:
        link.unlink()


def test_states_from_markers_and_modification_time(board_root: Path) -> None:
    now = time.time()
    os.utime(board_root / "live" / "metrics.jsonl", (now, now))  # it just logged a step
    states = {r.path: r.state for r in list_runs(board_root, now=now)}
    assert states == {
        "sft-a": "finished", "sft-b": "finished", "dpo": "finished", "bad-data": "failed",
        "sweep/trials/t0": "pruned", "live": "running", "old": "stopped",
    }  # fmt: skip
    # a running run goes quiet: stopped once the window has passed
    assert run_state(board_root / "live", now=now + 3600) == "stopped"


def test_best_metric_follows_each_methods_key_and_direction(board_root: Path) -> None:
    sft = read_metrics(board_root / "sft-a" / "metrics.jsonl")
    val_losses = [r["val_loss"] for r in sft if r.get("split") == "val"]
    best = best_value("sft", sft)
    assert best is not None and len(val_losses) >= 2
    assert best.value == min(val_losses) and not best.higher_is_better

    dpo = read_metrics(board_root / "dpo" / "metrics.jsonl")
    held_out = [r["loss"] for r in dpo if r.get("split") == "val"]
    best = best_value("dpo", dpo)
    # DPO's headline is its held-out loss (lower is better), not the train loss
    assert best is not None and best.label == "best held-out loss" and len(held_out) == 3
    assert best.value == min(held_out) and not best.higher_is_better
    # a DPO log without held-out loss falls to its next metric: accuracy, higher is better
    synthetic = [{"split": "val", "accuracy": a} for a in (0.25, 0.75, 0.5)]
    best = best_value("dpo", synthetic)
    assert best is not None and best.value == 0.75 and best.higher_is_better
    assert best_value("sft", [{"split": "train", "loss": 1.0}]) is None


def test_summary_of_a_finished_run(board_root: Path, tiny_llama: Path) -> None:
    s = summarize(board_root, board_root / "sft-a")
    rows = read_metrics(board_root / "sft-a" / "metrics.jsonl")
    assert s.method == "sft" and s.steps == 8 and s.base_model == str(tiny_llama)
    assert s.started == min(r["time"] for r in rows[:5])
    speeds = [r["tokens_per_s"] for r in rows if r.get("split") == "train"]
    assert s.tokens_per_s is not None and min(speeds) <= s.tokens_per_s <= max(speeds)


def test_filters_by_method_and_state(board_root: Path) -> None:
    assert [r.path for r in list_runs(board_root, method="dpo")] == ["dpo"]
    assert [r.path for r in list_runs(board_root, state="failed")] == ["bad-data"]
    assert list_runs(board_root, method="dpo", state="failed") == []


def test_rejects_are_read_a_page_at_a_time(board_root: Path, tmp_path: Path) -> None:
    rows, total = read_rejects(board_root / "bad-data" / "rejects.jsonl", 0, per_page=2)
    assert total == 3 and len(rows) == 2
    assert rows[0]["line"] == 1 and rows[0]["source"].endswith("bad.jsonl") and rows[0]["reason"]
    rows, _ = read_rejects(board_root / "bad-data" / "rejects.jsonl", 1, per_page=2)
    assert [r["line"] for r in rows] == [3]
    broken = tmp_path / "rejects.jsonl"
    broken.write_text(json.dumps({"line": 1}) + "\nnot json\n")
    assert read_rejects(broken, 0)[0][1] == {"raw": "not json"}


def test_config_diff_lists_only_differing_keys() -> None:
    a = {"optim": {"lr": 1e-3, "schedule": "cosine"}, "train": {"max_steps": 8}}
    b = {"optim": {"lr": 5e-3, "schedule": "cosine"}, "train": {"max_steps": 8, "seed": 1}}
    assert config_diff([a, b]) == [("optim.lr", [1e-3, 5e-3]), ("train.seed", [None, 1])]


def test_a_run_the_board_launched_is_running_while_its_process_lives(tmp_path: Path) -> None:
    run = tmp_path / "web"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    (tmp_path / ".launch").mkdir()
    record = tmp_path / ".launch" / "web.json"
    record.write_text(json.dumps({"name": "web", "pid": os.getpid()}))
    assert run_state(run, now=time.time() + 3600) == "running"  # quiet, but its process lives
    record.write_text(json.dumps({"name": "web", "pid": 2**22 + 7}))  # above pid_max: gone
    assert run_state(run) == "stopped"  # just written, but its process is gone
    assert _names(tmp_path) == ["web"]  # .launch itself is not scanned
