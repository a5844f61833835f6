"""``tunesmith sweep`` on a tiny model: it finds a better learning rate than a bad default, a
killed sweep resumes without repeating a finished trial, and the pruner stops a bad trial."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from tests.helpers.runs import REPO, train, write_chat_data, write_config
from tunesmith.cli import main
from tunesmith.config import load_config
from tunesmith.sweep import SweepSpec, run_sweep
from tunesmith.sweep.objective import held_out_loss

BAD_LR = 1e-7  # the default every test starts from: nothing is learnt in a few steps


def _setup(tmp_path: Path, model: Path, space: str, **train_keys: int) -> tuple[Path, Path]:
    data = write_chat_data(tmp_path / "d.jsonl")
    keys = {"max_steps": 6, "eval_every": 2, **train_keys}
    cfg = write_config(tmp_path, model, data, train=keys, optim={"lr": BAD_LR})
    space_file = tmp_path / "space.yaml"
    space_file.write_text(space)
    return cfg, space_file


def _study(out: Path) -> optuna.Study:
    return optuna.load_study(study_name="sweep", storage=f"sqlite:///{out / 'study.db'}")


def test_sweep_over_lr_finds_lower_held_out_loss_than_a_bad_default(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, space = _setup(tmp_path, tiny_llama, "optim.lr: {log_uniform: [1.0e-3, 5.0e-2]}\n")
    baseline = held_out_loss(train(cfg))
    out = tmp_path / "sweep"
    argv = ["sweep", str(cfg), "--space", str(space), "--trials", "3", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    study = _study(out)
    assert len(study.trials) == 3
    assert study.best_value < baseline - 0.05, (study.best_value, baseline)
    # each trial is an ordinary run dir; its objective is the held-out loss it logged
    for t in study.trials:
        run = out / "trials" / f"trial-{t.number:04d}"
        assert (run / "config.yaml").is_file() and (run / "metrics.jsonl").is_file()
        if t.state.name == "COMPLETE":
            assert t.value == held_out_loss(run)
            assert (
                yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"]
                == (t.params["optim.lr"])
            )
    best = load_config(out / "best.yaml")
    assert best.optim.lr == study.best_params["optim.lr"] and best.train.max_steps == 6
    assert "objective" in printed and "trial-0002" in printed
    report = (out / "report.html").read_text()
    assert 'data-chart="history"' in report and 'data-chart="curves"' in report
    assert len((out / "trials.csv").read_text().splitlines()) == 4


def test_a_bad_trial_is_pruned_and_its_run_dir_says_so(tmp_path: Path, tiny_llama: Path) -> None:
    cfg, space = _setup(tmp_path, tiny_llama, "optim.lr: {log_uniform: [1.0e-7, 5.0e-2]}\n")
    out = tmp_path / "sweep"
    spec = SweepSpec(config=str(cfg), overrides=[], space=str(space), trials=3, out=str(out))
    good, good2, bad = {"optim.lr": 3e-2}, {"optim.lr": 2e-2}, {"optim.lr": 1e-7}
    summary = run_sweep(spec, enqueue=[good, good2, bad])
    states = [t.state.name for t in sorted(_study(out).trials, key=lambda t: t.number)]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED"], states
    pruned = out / "trials" / "trial-0002"
    assert (pruned / "PRUNED").read_text().startswith("pruned at step 2")
    assert not (pruned / "final").exists()  # it stopped at its first evaluation
    steps = [r for r in (pruned / "metrics.jsonl").read_text().splitlines() if '"train"' in r]
    assert len(steps) == 2
    assert summary.counts == {"COMPLETE": 2, "PRUNED": 1}


def test_a_killed_sweep_resumes_without_repeating_finished_trials(
    tmp_path: Path, tiny_llama: Path
) -> None:
    cfg, space = _setup(
        tmp_path, tiny_llama, "optim.lr: {log_uniform: [1.0e-3, 5.0e-2]}\n", max_steps=12
    )
    out = tmp_path / "sweep"
    argv = ["sweep", str(cfg), "--space", str(space), "--trials", "2", "--out", str(out)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunesmith", *argv],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:  # kill it in the middle of its second trial
            time.sleep(0.1)
            if not (out / "study.db").is_file():
                continue
            try:
                states = [t.state.name for t in _study(out).trials]
            except KeyError:  # the file exists, the study row is not written yet
                continue
            if "COMPLETE" in states and "RUNNING" in states:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    before = {t.number: (t.state.name, t.value) for t in _study(out).trials}
    done_before = [n for n, (s, _) in before.items() if s in ("COMPLETE", "PRUNED")]
    assert len(done_before) == 1, before
    # the finished trials' run dirs are left as they are
    kept = {
        n: (out / f"trials/trial-{n:04d}/metrics.jsonl").stat().st_mtime_ns for n in done_before
    }

    assert main([*argv, "--resume"]) == 0
    after = {t.number: t for t in _study(out).trials}
    finished = [t for t in after.values() if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 2
    for n in done_before:  # not repeated: same trial, same value, same run dir
        assert (after[n].state.name, after[n].value) == before[n]
        assert (out / f"trials/trial-{n:04d}/metrics.jsonl").stat().st_mtime_ns == kept[n]
    interrupted = [t for t in after.values() if t.user_attrs.get("interrupted")]
    assert [t.number for t in interrupted] == [n for n, (s, _) in before.items() if s == "RUNNING"]
    assert len(after) == 2 + len(interrupted)  # only the replacements were started
    assert "INTERRUPTED" in (out / "trials.csv").read_text() or not interrupted


def test_an_unknown_space_key_names_the_nearest_valid_one(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, space = _setup(
        tmp_path, tiny_llama, "lora.r: {choice: [4, 8]}\noptim.lrr: {uniform: [0.1, 0.2]}\n"
    )
    argv = ["sweep", str(cfg), "--space", str(space), "--trials", "2", "--out", str(tmp_path / "s")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{space}:2: unknown key 'optim.lrr'" in err and "did you mean 'optim.lr'" in err
    space.write_text("lora.r: {choice: [4, -1]}\n")
    assert main(argv) == 2
    assert "lora.r=-1 is refused" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()  # refused before anything was written


def test_two_jobs_share_the_study_and_run_each_trial_once(tmp_path: Path, tiny_llama: Path) -> None:
    """--jobs 2: two worker processes on one SQLite study; exactly --trials trials, each with
    its own run dir trained once (a trial claimed by both workers would train its dir twice)."""
    cfg, space = _setup(tmp_path, tiny_llama, "optim.lr: {log_uniform: [1.0e-3, 5.0e-2]}\n",
                        max_steps=2, eval_every=2)  # fmt: skip
    out = tmp_path / "sweep"
    argv = ["sweep", str(cfg), "--space", str(space), "--trials", "3", "--jobs", "2"]
    assert main([*argv, "--out", str(out)]) == 0
    trials = _study(out).trials
    assert sorted(t.number for t in trials) == [0, 1, 2]
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)  # pruned: at step 2
    assert len({t.params["optim.lr"] for t in trials}) == 3  # the workers proposed apart
    for t in trials:
        run = out / "trials" / f"trial-{t.number:04d}"
        lines = (run / "metrics.jsonl").read_text().splitlines()
        assert sum('"split": "train"' in x for x in lines) == 2  # 2 steps, logged once
        if t.state.name == "COMPLETE":
            assert t.value == held_out_loss(run)
    assert sorted(p.name for p in (out / "trials").iterdir()) == [
        f"trial-{n:04d}" for n in range(3)
    ]


def test_an_eval_suite_metric_is_the_objective_in_the_direction_asked(
    tmp_path: Path, tiny_llama: Path
) -> None:
    """--objective SUITE.yaml:task/metric --direction maximize: each trial's value is the suite's
    metric on its final/ model, and the best trial is the one with the largest."""
    from tunesmith.eval.runner import evaluate_suite

    cfg, space = _setup(tmp_path, tiny_llama, "optim.lr: {log_uniform: [1.0e-3, 5.0e-2]}\n",
                        max_steps=2, eval_every=2)  # fmt: skip
    held_out = write_chat_data(tmp_path / "held.jsonl", n=6, seed=5)
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "tiny", "tasks": [
        {"name": "lm", "type": "loss", "data": str(held_out)},
    ]}))  # fmt: skip
    out = tmp_path / "sweep"
    argv = ["sweep", str(cfg), "--space", str(space), "--trials", "3", "--out", str(out)]
    objective = ["--objective", f"{suite}:lm/loss", "--direction", "maximize"]
    assert main([*argv, *objective]) == 0
    study = _study(out)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE  # loss alone would minimise
    values = {}
    for t in study.trials:
        if t.state.name == "PRUNED":  # by its held-out loss, before the suite ran
            continue
        run = out / "trials" / f"trial-{t.number:04d}"
        summary = evaluate_suite(str(run), str(suite), progress=False)["summary"]
        assert t.value == pytest.approx(summary["lm/loss"], rel=1e-6)
        values[t.number] = t.value
    assert len(set(values.values())) == len(values) >= 2
    assert study.best_trial.number == max(values, key=values.__getitem__)
    assert load_config(out / "best.yaml").optim.lr == study.best_params["optim.lr"]
