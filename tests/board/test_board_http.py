"""The board over HTTP (fastapi TestClient): every page, the token gate, path confinement."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tunesmith.board.app import COOKIE, create_app
from tunesmith.board.context import BoardContext
from tunesmith.cli import main
from tunesmith.eval.compare import compare_results


@pytest.fixture
def client(board_root: Path) -> TestClient:
    return TestClient(create_app(BoardContext(runs_dir=board_root)))


def test_runs_page_lists_every_run_and_filters(client: TestClient) -> None:
    page = client.get("/").text
    listed = re.findall(r'<tr data-run="([^"]+)" data-state="([^"]+)"', page)
    assert dict(listed)["sweep/trials/t0"] == "pruned" and len(listed) == 7
    only = re.findall(r'<tr data-run="([^"]+)"', client.get("/?method=dpo").text)
    assert only == ["dpo"]
    failed = re.findall(r'<tr data-run="([^"]+)"', client.get("/?state=failed").text)
    assert failed == ["bad-data"]
    assert {r["path"] for r in client.get("/api/runs?state=finished").json()} == {
        "sft-a", "sft-b", "dpo"}  # fmt: skip


def test_run_page_shows_config_predictions_lineage_and_live_charts(
    client: TestClient, board_root: Path
) -> None:
    page = client.get("/run/sft-a").text
    result = json.loads((board_root / "sft-a" / "eval-mc.json").read_text())
    examples = result["tasks"]["mc"]["examples"]
    assert len(examples) == 6
    for e in examples:  # every per-example prediction is on the page
        assert f"<td>{e['prediction']}</td>" in page
    assert "run_name: sft-a" in page  # the resolved config
    assert '<section id="lineage">' in page and "train " in page
    assert 'data-events="/api/run/sft-a/events"' in page
    assert 'data-chart="loss"' in page and 'data-chart="lr"' in page
    dpo = client.get("/run/dpo").text
    assert 'data-chart="dpo-accuracy"' in dpo and 'data-chart="dpo-margin"' in dpo


def test_rejects_browser_pages_through_records(client: TestClient, board_root: Path) -> None:
    page = client.get("/run/bad-data").text
    assert "3 rejected record(s); page 1 of 1" in page
    assert re.search(r"<td>[^<]*bad\.jsonl:1</td>", page) and "FAILED:" in page
    assert client.get("/run/bad-data?rejects=5").status_code == 200
    assert client.get("/run/bad-data?rejects=-1").status_code == 422


def test_compare_shows_config_diff_curves_and_win_rate(
    client: TestClient, board_root: Path
) -> None:
    page = client.get("/compare?run=sft-a&run=sft-b").text
    assert re.search(r"<td>optim\.lr</td><td>0\.005</td><td>0\.001</td>", page)
    assert re.search(r"<td>train\.max_steps</td><td>8</td><td>4</td>", page)
    assert "<td>train.seed</td>" not in page  # identical keys are not listed
    a, b = (json.loads((board_root / n / "eval-mc.json").read_text()) for n in ("sft-a", "sft-b"))
    overall = compare_results(a, b)["overall"]
    row = re.search(r"<td>sft-a vs sft-b</td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td>", page)
    assert row and [int(x) for x in row.groups()] == [
        overall["n"], overall["wins_a"], overall["wins_b"]]  # fmt: skip
    for chart in ("loss", "val_loss", "lr", "tokens_per_s"):
        svg = re.search(rf'<svg [^>]*data-chart="{chart}".*?</svg>', page, re.S)
        assert svg and len(re.findall(r'class="series"', svg.group(0))) == 2, chart
    assert "Pick two or more runs" in client.get("/compare?run=sft-a").text


def test_traversal_and_symlink_out_are_refused(
    client: TestClient, board_root: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret-run"
    secret.mkdir()
    (secret / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    (secret / "config.yaml").write_text("method: sft\nsecret: hunter2\n")
    link = board_root / "escape"
    link.symlink_to(secret)
    try:
        for url in ("/run/..%2F..%2Fetc", "/run/sft-a%2F..%2F..%2F..", "/run/escape",
                    "/api/run/escape/events", "/compare?run=sft-a&run=escape",
                    "/preflight/escape?name=doctor-x.html"):  # fmt: skip
            response = client.get(url)
            assert response.status_code == 403, url
            assert str(tmp_path) not in response.text and "hunter2" not in response.text
            assert str(board_root) not in response.text
    finally:
        link.unlink()
    missing = client.get("/run/no-such-run")
    assert missing.status_code == 404 and str(board_root) not in missing.text


def test_token_gate(board_root: Path) -> None:
    app = create_app(BoardContext(runs_dir=board_root, token="s3cret"))
    anon = TestClient(app)
    for url in ("/", "/run/sft-a", "/static/board.js", "/api/runs"):
        denied = anon.get(url)
        assert denied.status_code == 401 and denied.json()["detail"], url
    assert anon.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert anon.get("/", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    browser = TestClient(app)
    first = browser.get("/?token=s3cret")
    assert first.status_code == 200
    cookie = first.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=s3cret") and "HttpOnly" in cookie
    assert browser.get("/run/sft-a").status_code == 200  # the cookie carries it from here
    assert TestClient(app).get("/?token=nope").status_code == 401


def test_guide_pages(board_root: Path, tmp_path: Path) -> None:
    guide = tmp_path / "guide"
    guide.mkdir()
    (guide / "lora-rank.md").write_text(
        "# Which LoRA rank?\n\n| rank | score |\n|---|---|\n| 8 | 0.5 |\n\n"
        "<script>alert(1)</script>\n\n![plot](rank.svg)\n"
    )
    (guide / "rank.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    client = TestClient(create_app(BoardContext(runs_dir=board_root, guide_dir=guide)))
    index = client.get("/guide").text
    assert '<a href="/guide/lora-rank">Which LoRA rank?</a>' in index
    page = client.get("/guide/lora-rank").text
    assert "<td>0.5</td>" in page and "<script>alert" not in page and "&lt;script&gt;" in page
    assert client.get("/guide/rank.svg").headers["content-type"].startswith("image/svg")
    assert client.get("/guide/..%2F..%2Fetc%2Fpasswd").status_code == 403
    assert client.get("/guide/nope").status_code == 404
    bare = TestClient(create_app(BoardContext(runs_dir=board_root, guide_dir=None)))
    assert "ships in the repository checkout" in bare.get("/guide").text


def test_cli_refuses_an_open_bind_without_a_token(
    board_root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TUNESMITH_BOARD_TOKEN", raising=False)
    assert main(["board", "--runs", str(board_root), "--host", "0.0.0.0"]) == 2
    assert "--token" in capsys.readouterr().err
    assert main(["board", "--runs", str(board_root / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_forgetting_panel_and_preflight_report(board_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    run = root / "probe"
    run.mkdir(parents=True)
    for name in ("config.yaml", "metrics.jsonl"):
        shutil.copy(board_root / "sft-a" / name, run / name)
    (run / "forgetting.json").write_text(json.dumps({
        "before": {"probe_loss": 3.1}, "after": {"probe_loss": 3.4}, "delta": {"probe_loss": 0.3},
        "flipped": [{"id": "mc:3", "before": "Mercury", "after": "Venus"}]}))  # fmt: skip
    (root / "doctor-20261206-101010.html").write_text("<html><body>PASS all</body></html>")
    client = TestClient(create_app(BoardContext(runs_dir=root)))
    page = client.get("/run/probe").text
    assert "<h2>Forgetting</h2>" in page and "probe_loss" in page and "Venus" in page
    link = re.search(r'href="(/preflight/probe\?[^"]+)"', page)
    assert link, page
    report = client.get(link.group(1).replace("&amp;", "&"))
    assert "PASS all" in report.text and report.headers["content-security-policy"] == "sandbox"
    assert client.get("/preflight/probe?name=config.yaml").status_code == 404
    assert client.get("/compare?run=probe&run=../x").status_code == 403
    no_metrics = TestClient(create_app(BoardContext(runs_dir=board_root)))
    refused = no_metrics.get("/compare?run=sft-a&run=bad-data")
    assert refused.status_code == 400 and str(board_root) not in refused.text


def test_preflight_can_be_run_from_the_run_page(board_root: Path, tmp_path: Path) -> None:
    """The run page's button runs `tunesmith doctor` on the run's own config.yaml: the report
    lands in the run dir and the page links it; a folder without a config is a 400."""
    root = tmp_path / "runs"
    run = root / "checked"
    run.mkdir(parents=True)
    for name in ("config.yaml", "metrics.jsonl"):
        shutil.copy(board_root / "sft-a" / name, run / name)
    client = TestClient(create_app(BoardContext(runs_dir=root)))
    assert 'action="/run/checked/preflight"' in client.get("/run/checked").text
    done = client.post("/run/checked/preflight", follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/run/checked#preflight"
    reports = list(run.glob("doctor-*.html"))
    assert len(reports) == 1 and "check" in reports[0].read_text().lower()
    assert reports[0].name in client.get("/run/checked").text
    (root / "bare").mkdir()
    (root / "bare" / "metrics.jsonl").write_text("")
    refused = client.post("/run/bare/preflight", follow_redirects=False)
    assert refused.status_code == 400 and str(root) not in refused.text
