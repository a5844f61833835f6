"""`tunesmith doctor` and the pre-flight of `tunesmith train`, through the real CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.helpers.runs import write_chat_data, write_config
from tunesmith.cli import main

STATUS = re.compile(r"^(PASS|WARN|FAIL|SKIP)\s+(\S+)", re.MULTILINE)


def _statuses(out: str) -> dict[str, str]:
    return {name: status for status, name in STATUS.findall(out)}


def test_healthy_config_passes_everything(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_chat_data(tmp_path / "d.jsonl")
    cfg = write_config(tmp_path, tiny_llama, data, data={"packing": True})
    html = tmp_path / "report" / "doctor.html"
    assert main(["doctor", str(cfg), "--html", str(html), "--examples", "2"]) == 0
    out = capsys.readouterr().out
    statuses = _statuses(out)
    assert list(statuses) == [
        "end-of-turn",
        "bos",
        "padding",
        "padding-side",
        "template",
        "truncation",
        "packing",
        "lengths",
    ]
    assert set(statuses.values()) == {"PASS"}, out
    assert "[[It is " in out and "<|im_end|>]]" in out  # not a TTY: plain markers
    assert "\x1b[" not in out
    assert re.search(r"one training step: [\d.]+ s \([\d,]+ tokens/s", out)
    assert "memory estimate: not available (planner not implemented)" in out
    assert f"report: {html}" in out
    page = html.read_text()
    trained = re.findall(r'<span class="tok tr" title="[^"]*">([^<]*)</span>', page)
    assert "&lt;|im_end|&gt;" in trained and "It is " in "".join(trained)
    assert not (tmp_path / "runs" / "run").exists()  # doctor creates no run dir


def test_default_report_path_and_no_model(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path, tiny_llama, write_chat_data(tmp_path / "d.jsonl", n=8))
    assert main(["doctor", str(cfg), "data.max_length=62", "--no-model"]) == 0
    out = capsys.readouterr().out
    statuses = _statuses(out)
    assert statuses["packing"] == "SKIP" and statuses["truncation"] == "WARN"
    assert "not timed (--no-model)" in out
    reports = list((tmp_path / "runs").glob("doctor-*.html"))
    assert len(reports) == 1 and f"report: {reports[0]}" in out


def _text_with_bos(path: Path) -> Path:
    """Plain-text rows that already start with the BOS text: the tokenizer adds a second one."""
    rows = [{"text": f"<s>The quick brown fox number {i}."} for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_doctor_fails_and_train_refuses_unless_told(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _text_with_bos(tmp_path / "t.jsonl")
    cfg = write_config(tmp_path, tiny_llama, data, train={"max_steps": 1})
    assert main(["doctor", str(cfg), "--no-model", "--html", str(tmp_path / "r.html")]) == 1
    out = capsys.readouterr().out
    assert _statuses(out)["bos"] == "FAIL" and "1 check(s) FAILED" in out

    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "pre-flight checks failed" in err and "FAIL bos: doubled BOS" in err
    assert "--skip-preflight" in err and "tunesmith doctor" in err
    assert not (tmp_path / "runs" / "run" / "config.yaml").exists()

    assert main(["train", str(cfg), "--skip-preflight"]) == 0
    assert (tmp_path / "runs" / "run" / "final" / "adapter_config.json").is_file()


def test_unusable_data_is_a_failed_check(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    cfg = write_config(tmp_path, tiny_llama, data, data={"on_error": "skip", "val_fraction": 0.0})
    assert main(["doctor", str(cfg), "--html", str(tmp_path / "r.html")]) == 1
    out = capsys.readouterr().out
    assert _statuses(out) == {"data": "FAIL"} and "no usable training example" in out
