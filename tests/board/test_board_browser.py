"""The board in a real browser: Playwright drives the system Chromium against a live board.

Every page opens without a console error, every curve has the points ``metrics.jsonl`` holds,
and a line appended to a run's log shows up as a new point on its live curve. With
``TUNESMITH_SCREENSHOT=1`` the runs page and a run page are saved to ``docs/board.png`` and
``docs/board-run.png`` (off by default so CI leaves the tree clean).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tunesmith.board.context import BoardContext
from tunesmith.board.server import BoardThread

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")

POINTS = """els => els.map(e => [e.closest('svg').dataset.chart, e.dataset.series,
                              Number(e.dataset.points)])"""


@pytest.fixture(scope="module")
def browser_page(board_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    guide = tmp_path_factory.mktemp("guide")
    (guide / "rank.md").write_text("# Which rank?\n\n| rank | score |\n|---|---|\n| 8 | 0.5 |\n")
    ctx = BoardContext(runs_dir=board_root, guide_dir=guide)
    with BoardThread(ctx) as board, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.errors = []  # type: ignore[attr-defined]
        page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        page.board_url = board.url  # type: ignore[attr-defined]
        yield page
        browser.close()


def _rows(run: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _count(rows: list[dict[str, Any]], split: str, key: str) -> int:
    return sum(1 for r in rows if r.get("split", "train") == split and key in r)


def test_every_page_opens_without_console_errors(browser_page: Any) -> None:
    page = browser_page
    for path in ("/", "/?method=dpo&state=finished", "/run/sft-a", "/run/dpo", "/run/bad-data",
                 "/run/sweep/trials/t0", "/compare?run=sft-a&run=sft-b&run=dpo", "/guide",
                 "/guide/rank"):  # fmt: skip
        response = page.goto(page.board_url + path)
        assert response is not None and response.status == 200, path
        page.wait_for_load_state("load")
        assert page.locator("main h1").count() == 1, path
    page.wait_for_timeout(300)
    assert page.errors == []


def test_run_curves_hold_every_logged_point(browser_page: Any, board_root: Path) -> None:
    page = browser_page
    rows = _rows(board_root / "dpo")
    page.goto(page.board_url + "/run/dpo")
    page.wait_for_selector('svg[data-chart="dpo-accuracy"] .series')
    plotted = {(c, s): n for c, s, n in page.eval_on_selector_all("svg.chart .series", POINTS)}
    assert plotted[("loss", "train")] == _count(rows, "train", "loss")
    assert plotted[("loss", "val loss")] == _count(rows, "val", "loss") == 3  # DPO's held-out
    assert plotted[("lr", "lr")] == _count(rows, "train", "lr")
    assert plotted[("dpo-accuracy", "accuracy")] == _count(rows, "val", "accuracy") >= 2
    assert plotted[("dpo-logps", "logps/rejected")] == _count(rows, "val", "logps/rejected")
    assert page.errors == []


def test_compare_curves_overlay_each_run(browser_page: Any, board_root: Path) -> None:
    page = browser_page
    page.goto(page.board_url + "/compare?run=sft-a&run=sft-b")
    plotted = {(c, s): n for c, s, n in page.eval_on_selector_all("svg.chart .series", POINTS)}
    for run in ("sft-a", "sft-b"):
        rows = _rows(board_root / run)
        assert plotted[("loss", run)] == _count(rows, "train", "loss")
        assert plotted[("val_loss", run)] == _count(rows, "val", "val_loss") >= 1
    assert page.errors == []


def test_live_curve_gains_the_appended_point(browser_page: Any, board_root: Path) -> None:
    page = browser_page
    run = board_root / "live"
    before = _count(_rows(run), "train", "loss")
    page.goto(page.board_url + "/run/live")
    series = page.locator('svg[data-chart="loss"] .series[data-series="train"]')
    page.wait_for_function(
        "n => { const s = document.querySelector("
        '\'svg[data-chart="loss"] .series[data-series="train"]\');'
        " return s && Number(s.dataset.points) === n; }",
        arg=before,
    )
    last = max(r["step"] for r in _rows(run))
    with (run / "metrics.jsonl").open("a") as fh:
        fh.write(json.dumps({"time": time.time(), "step": last + 1, "split": "train",
                             "loss": 0.01, "lr": 1e-4, "tokens_per_s": 50.0}) + "\n")  # fmt: skip
    page.wait_for_function(
        "n => Number(document.querySelector("
        '\'svg[data-chart="loss"] .series[data-series="train"]\').dataset.points) === n',
        arg=before + 1,
        timeout=10_000,
    )
    assert series.get_attribute("data-points") == str(before + 1)
    assert page.errors == []
    if os.environ.get("TUNESMITH_SCREENSHOT") == "1":  # for the README and docs/board.md
        page.goto(page.board_url + "/")
        page.screenshot(path=str(REPO / "docs" / "board.png"))
        page.goto(page.board_url + "/run/sft-a")
        page.wait_for_selector('svg[data-chart="loss"] .series')
        page.screenshot(path=str(REPO / "docs" / "board-run.png"))


def test_a_token_in_the_address_bar_carries_to_the_live_stream(
    browser_page: Any, board_root: Path
) -> None:
    ctx = BoardContext(runs_dir=board_root, token="tok-123")
    rows = _rows(board_root / "sft-a")
    with BoardThread(ctx) as board:
        page = browser_page.context.browser.new_page()
        try:
            assert page.goto(board.url + "/run/sft-a").status == 401
            assert page.goto(board.url + "/?token=tok-123").status == 200
            page.goto(board.url + "/run/sft-a")  # no token in the URL: the cookie carries it
            page.wait_for_selector('svg[data-chart="loss"] .series[data-series="train"]')
            plotted = page.eval_on_selector_all("svg.chart .series", POINTS)
            assert ["loss", "train", _count(rows, "train", "loss")] in plotted
        finally:
            page.close()
