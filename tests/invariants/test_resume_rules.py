"""The lifecycle's resume rules (SFT here; every method's lifecycle test repeats them):
resume without a checkpoint and resume with a changed config are refused, never a fresh start;
a longer run resumes; data files whose bytes differ from env.json's hashes are refused unless
--allow-data-change."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.runs import step_losses, train_subprocess, write_chat_data, write_config
from tunesmith.cli import main
from tunesmith.engine import lineage
from tunesmith.engine.run import CRASH_ENV, config_changes, data_changes


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


def test_resume_refuses_changed_data_unless_allowed(
    tmp_path: Path, tiny_llama: Path, capsys
) -> None:
    """SFT: one changed byte of the training file refuses the resume, naming the file; with
    --allow-data-change it resumes."""
    data = write_chat_data(tmp_path / "d.jsonl", n=16)
    cfg = write_config(tmp_path, tiny_llama, data, train={"max_steps": 4, "save_every": 2})
    assert main(["train", str(cfg), "train.run_name=r"]) == 0
    original = data.read_text()
    changed = _one_byte_changed(original)
    data.write_text(changed)
    resume = ["train", str(cfg), "train.run_name=r", "train.max_steps=6", "--resume"]
    assert main(resume) == 2
    err = capsys.readouterr().err
    assert f"{data}: changed (sha256" in err and "--allow-data-change" in err
    assert len(step_losses(tmp_path / "runs" / "r")) == 4  # nothing trained
    data.write_text(original)  # the same bytes again: resumes with no flag needed
    assert main([*resume[:-1], "train.max_steps=5", "--resume"]) == 0
    data.write_text(changed)
    assert main([*resume, "--allow-data-change"]) == 0
    assert len(step_losses(tmp_path / "runs" / "r")) == 6


def test_resume_refuses_changed_data_for_another_method(tmp_path: Path, capsys) -> None:
    """The check lives in the lifecycle, so every method has it: embed here, its held-out file
    changed since the run started (a data file deleted is refused already at config load)."""
    from tests.methods.test_classify import make_tiny_bert
    from tests.methods.test_embed import embed_config

    bert = make_tiny_bert(tmp_path / "bert", dropout=0.0)
    cfg = embed_config(tmp_path, bert, train={"max_steps": 2, "save_every": 1})
    assert main(["train", str(cfg)]) == 0
    held_out = tmp_path / "test.jsonl"
    held_out.write_text(_one_byte_changed(held_out.read_text(), "query"))
    assert main(["train", str(cfg), "train.max_steps=3", "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"{held_out}: changed" in err and str(tmp_path / "train.jsonl") not in err


def test_data_changes_names_missing_files(tmp_path: Path) -> None:
    kept, gone = tmp_path / "kept.jsonl", tmp_path / "gone.jsonl"
    kept.write_text("{}\n")
    env = {"data_sha256": {str(kept): lineage.sha256_file(kept), str(gone): "0" * 64}}
    (tmp_path / "env.json").write_text(json.dumps(env))
    assert data_changes(tmp_path) == [f"{gone}: missing"]
    kept.write_text("{} \n")
    assert data_changes(tmp_path)[0].startswith(f"{gone}: missing")
    assert data_changes(tmp_path)[1].startswith(f"{kept}: changed (sha256 ")


def _one_byte_changed(text: str, key: str = "content") -> str:
    """``text`` with the first letter of the first ``key`` string value in the other case."""
    i = text.index(f'"{key}": "') + len(key) + 5
    while not text[i].isalpha():
        i += 1
    return text[:i] + text[i].swapcase() + text[i + 1 :]
