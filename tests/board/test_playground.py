"""The board's Playground over HTTP: what it offers, the streamed replies (equal to
``tunesmith generate``'s greedy text), the rendered prompt, and path confinement (403)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.helpers.runs import train, write_chat_data, write_config
from tunesmith.board import playground
from tunesmith.board.context import BoardContext

PROMPT = "3 plus 4?"
MAX_TOKENS = 10


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    """A runs folder with one 3-step LoRA SFT run (``lora-run``) on the tiny llama."""
    tmp = tmp_path_factory.mktemp("pg")
    data = write_chat_data(tmp / "chat.jsonl", n=16)
    cfg = write_config(
        tmp, tiny_llama, data, train={"max_steps": 3, "run_name": "lora-run"}, optim={"lr": 0.05}
    )
    run = train(cfg)
    assert (run / "final" / "adapter_config.json").is_file()
    return run.parent


@pytest.fixture(scope="module")
def board(runs_dir: Path) -> Iterator[tuple[TestClient, BoardContext]]:
    ctx = BoardContext(runs_dir=runs_dir)
    app = FastAPI()
    app.include_router(playground.router(ctx))
    with TestClient(app) as client:
        yield client, ctx
    playground.close(ctx)


def _events(client: TestClient, body: dict[str, Any]) -> list[dict[str, Any]]:
    with client.stream("POST", "/playground/stream", json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]


def _replies(events: list[dict[str, Any]], columns: int) -> list[str]:
    texts = [""] * columns
    for e in events:
        if e["type"] == "delta":
            texts[e["column"]] += e["text"]
    return texts


def test_page_offers_the_runs_base_and_its_adapter(
    board: tuple[TestClient, BoardContext], tiny_llama: Path
) -> None:
    client, _ = board
    html = client.get("/playground").text
    assert f'<option value="{tiny_llama}">' in html
    assert 'value="lora-run"' in html and f'data-base="{tiny_llama}"' in html
    assert '<script src="/static/playground.js">' in html


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_streamed_replies_equal_generate(
    board: tuple[TestClient, BoardContext], runs_dir: Path, tiny_llama: Path, temperature: float
) -> None:
    """Greedy, and sampled with a seed: the base column is ``tunesmith generate`` on the base,
    the adapter column ``tunesmith generate`` on the run (which strips the reply)."""
    from tunesmith.api import generate

    client, _ = board
    body = {"base": str(tiny_llama), "adapters": ["lora-run"], "prompt": PROMPT,
            "temperature": temperature, "max_tokens": MAX_TOKENS, "seed": 5}  # fmt: skip
    events = _events(client, body)
    assert events[0] == {"type": "columns", "columns": ["base", "lora-run"]}
    assert events[-1] == {"type": "end"}
    assert sum(e["type"] == "done" for e in events) == 2
    replies = _replies(events, 2)
    assert all(len(r) > 0 for r in replies)
    sampling = {"max_new_tokens": MAX_TOKENS, "temperature": temperature, "seed": 5}
    want = [
        generate(tiny_llama, PROMPT, **sampling)[0].reply,
        generate(runs_dir / "lora-run", PROMPT, **sampling)[0].reply,
    ]
    assert [r.strip() for r in replies] == want
    if temperature:
        assert want[0] and want[1]  # sampled text from the tiny model is not blank


def test_rendered_prompt_is_the_chat_template_string(
    board: tuple[TestClient, BoardContext], tiny_llama: Path
) -> None:
    from tunesmith.data.records import Message
    from tunesmith.data.templates import render_prompt
    from tunesmith.models.load import load_tokenizer

    client, _ = board
    body = {"base": str(tiny_llama), "prompt": PROMPT, "system": "Be brief.", "max_tokens": 2}
    prompts = [e for e in _events(client, body) if e["type"] == "prompt"]
    want = render_prompt(
        [Message("system", "Be brief."), Message("user", PROMPT)], load_tokenizer(tiny_llama)
    )
    assert [p["text"] for p in prompts] == [want]
    assert "Be brief." in want and PROMPT in want


def test_sampled_replies_follow_the_seed(
    board: tuple[TestClient, BoardContext], tiny_llama: Path
) -> None:
    client, _ = board
    body = {"base": str(tiny_llama), "adapters": ["lora-run"], "prompt": PROMPT,
            "temperature": 1.0, "top_p": 0.9, "max_tokens": MAX_TOKENS}  # fmt: skip
    first = _replies(_events(client, {**body, "seed": 5}), 2)
    again = _replies(_events(client, {**body, "seed": 5}), 2)
    other = _replies(_events(client, {**body, "seed": 6}), 2)
    assert first == again
    assert first != other


def test_adapter_paths_outside_the_runs_folder_are_refused(
    board: tuple[TestClient, BoardContext], runs_dir: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    client, _ = board
    body = {"base": str(tiny_llama), "prompt": PROMPT, "max_tokens": 2}
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    link = runs_dir / "escape"
    os.symlink(outside, link)
    try:
        for path in ("../elsewhere", str(outside), "escape", "lora-run/../../x"):
            r = client.post("/playground/stream", json={**body, "adapters": [path]})
            assert r.status_code == 403, (path, r.text)
            assert "outside the runs folder" in r.json()["detail"]
    finally:
        link.unlink()


def test_bad_requests_get_clear_errors(
    board: tuple[TestClient, BoardContext], runs_dir: Path, tiny_llama: Path
) -> None:
    client, _ = board
    body = {"base": str(tiny_llama), "prompt": PROMPT, "max_tokens": 2}
    r = client.post("/playground/stream", json={**body, "base": "/etc"})
    assert r.status_code == 400 and "not a base the board offers" in r.json()["detail"]
    r = client.post("/playground/stream", json={**body, "adapters": ["a", "b", "c", "d"]})
    assert r.status_code == 422
    (runs_dir / "not-a-run").mkdir(exist_ok=True)
    r = client.post("/playground/stream", json={**body, "adapters": ["not-a-run"]})
    assert r.status_code == 400 and "not-a-run" in r.json()["detail"]


# ----------------------------------------------------------------------------- in a browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
RECORD_PARTIALS = """() => {
  window.partials = [];
  new MutationObserver(records => {
    for (const r of records) {
      const el = r.target.nodeType === 1 ? r.target : r.target.parentElement;
      if (el && el.classList.contains('pg-reply')) {
        window.partials.push([el.closest('.pg-column').dataset.column, el.textContent]);
      }
    }
  }).observe(document.getElementById('pg-replies'),
             {subtree: true, childList: true, characterData: true});
}"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_replies_stream_into_the_page(runs_dir: Path, tiny_llama: Path) -> None:
    """Base and adapter side by side, the base's text seen growing (at least two partial texts
    before the last), the rendered template shown on request; no console errors."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from tunesmith.board.server import BoardThread

    ctx = BoardContext(runs_dir=runs_dir)
    with BoardThread(ctx) as board, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(board.url + "/playground")
            page.check('input[name="adapter"][value="lora-run"]')
            page.fill("#pg-prompt", PROMPT)
            page.fill('input[name="temperature"]', "1")
            page.fill('input[name="max_tokens"]', "48")
            page.check("#pg-show-template")
            page.evaluate(RECORD_PARTIALS)
            page.click("#pg-send")
            page.wait_for_selector("#pg-replies[data-finished]", timeout=120_000)
            assert page.locator(".pg-column h3").all_inner_texts() == ["base", "lora-run"]
            final = page.locator(".pg-reply").first.text_content() or ""
            seen = [t for c, t in page.evaluate("window.partials") if c == "0"]
            partial = [t for t in dict.fromkeys(seen) if t and t != final]
            assert len(partial) >= 2, seen
            assert all(final.startswith(t) for t in partial)
            assert page.locator(".pg-status").all_inner_texts()[0].startswith("done (length")
            template = page.locator(".pg-template").first
            assert template.is_visible() and PROMPT in (template.text_content() or "")
            assert errors == []
        finally:
            browser.close()
            playground.close(ctx)
