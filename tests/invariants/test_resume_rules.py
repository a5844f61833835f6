"""The lifecycle's resume rules (SFT here; every method's lifecycle test repeats them):
resume without a checkpoint and resume with a changed config are refused, never a fresh start;
a longer run resumes."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.runs import step_losses, train_subprocess, write_chat_data, write_config
from tunesmith.cli import main
from tunesmith.engine.run import CRASH_ENV, config_changes


def test_resume_without_a_checkpoint_is_an_error(tmp_path: Path, tiny_llama: Path, capsys) -> None:
    data = write_chat_data(tmp_path / "d.jsonl", n=16)
    cfg = write_config(tmp_path, tiny_llama, data, train={"max_steps": 6, "save_every": 4})
    killed = train_subprocess(cfg, "train.run_name=early", env={CRASH_ENV: "2"})
    assert killed.returncode == -9  # killed before its first checkpoint (step 4)
    run = tmp_path / "runs" / "early"
    assert len(step_losses(run)) == 2
    assert main(["train", str(cfg), "train.run_name=early", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "holds no checkpoint" in err
    assert len(step_losses(run)) == 2  # nothing trained, nothing appended


def test_resume_refuses_a_changed_config_and_allows_a_longer_run(
    tmp_path: Path, tiny_llama: Path, capsys
) -> None:
    data = write_chat_data(tmp_path / "d.jsonl", n=16)
    cfg = write_config(tmp_path, tiny_llama, data, train={"max_steps": 4, "save_every": 2})
    assert main(["train", str(cfg), "train.run_name=r"]) == 0
    assert main(["train", str(cfg), "train.run_name=r", "optim.lr=0.1", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "optim.lr" in err and "0.005 -> 0.1" in err
    assert main(["train", str(cfg), "train.run_name=r", "train.max_steps=6", "--resume"]) == 0
    losses = step_losses(tmp_path / "runs" / "r")
    assert len(losses) == 6  # steps 1-4 once, then 5-6: no step logged twice


def test_config_changes_lists_dotted_keys() -> None:
    a = {"train": {"max_steps": 3, "lr": 1}, "data": {"train": ["x"]}}
    b = {"train": {"max_steps": 5, "lr": 1}, "data": {"train": ["y"]}, "new": 1}
    assert config_changes(a, b) == ["data.train", "new", "train.max_steps"]
