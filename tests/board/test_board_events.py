"""The run page's server-sent events: every existing metrics line, then each appended one."""

from __future__ import annotations

import http.client
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from tunesmith.board.context import BoardContext
from tunesmith.board.server import BoardThread


def _stream(board: BoardThread, path: str) -> Iterator[str]:
    """The lines of a GET's streamed body, as they arrive."""
    conn = http.client.HTTPConnection(board.host, board.port, timeout=30)
    conn.request("GET", path)
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("content-type", "").startswith("text/event-stream")
    try:
        while line := response.readline():
            yield line.decode().rstrip("\r\n")
    finally:
        conn.close()


def _events(lines: list[str]) -> list[tuple[str, str]]:
    """``(event, data)`` pairs of the SSE lines read so far."""
    out, event = [], "message"
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            out.append((event, line[6:]))
            event = "message"
    return out


def test_stream_sends_existing_lines_then_an_appended_one(board_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    run = root / "growing"
    run.mkdir(parents=True)
    for name in ("config.yaml", "metrics.jsonl"):
        shutil.copy(board_root / "sft-b" / name, run / name)
    existing = (run / "metrics.jsonl").read_text().splitlines()
    with BoardThread(BoardContext(runs_dir=root)) as board:
        lines = _stream(board, "/api/run/growing/events")
        seen: list[str] = []
        while ("ready", "{}") not in _events(seen):
            seen.append(next(lines))
        data = [json.loads(d) for e, d in _events(seen) if e == "message"]
        assert data == [json.loads(x) for x in existing]
        new = {"step": 99, "split": "train", "loss": 0.125, "time": time.time()}
        with (run / "metrics.jsonl").open("a") as fh:  # a partial write, then the rest
            text = json.dumps(new) + "\n"
            fh.write(text[:10])
            fh.flush()
            time.sleep(0.7)
            fh.write(text[10:])
        while len([e for e, _ in _events(seen) if e == "message"]) == len(existing):
            seen.append(next(lines))
        lines.close()
        assert json.loads(_events(seen)[-1][1]) == new


def test_stream_of_a_finished_run_ends(board_root: Path) -> None:
    with BoardThread(BoardContext(runs_dir=board_root)) as board:
        events = _events(list(_stream(board, "/api/run/sft-b/events")))  # the server closed it
    assert events[-1] == ("end", json.dumps({"state": "finished"}))
    rows = (board_root / "sft-b" / "metrics.jsonl").read_text().splitlines()
    assert len([e for e, _ in events if e == "message"]) == len(rows)
