"""The board's Launch page: recipes, validation with the nearest-key suggestion, and a run started,
stopped and resumed as a subprocess (over HTTP, then from the page in Chromium)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.helpers.runs import write_chat_data
from tunesmith.board import launch
from tunesmith.board.context import BoardContext

RECIPE = "tiny/sft_tiny.yaml"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def recipes(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    """A recipes folder: one tiny-model SFT recipe, and a non-training YAML (not offered)."""
    root = tmp_path_factory.mktemp("recipes") / "configs"
    (root / "tiny").mkdir(parents=True)
    data = write_chat_data(root.parent / "chat.jsonl", n=16)
    cfg = {
        "model": {"name_or_path": str(tiny_llama)},
        "data": {"train": str(data), "max_length": 64, "val_fraction": 0.125},
        "train": {"max_steps": 3, "micro_batch_size": 4, "seed": 3, "precision": "fp32"},
        "optim": {"lr": 5e-3},
        "lora": {"dropout": 0.0, "r": 4},
    }
    (root / RECIPE).write_text(f"# tunesmith train configs/{RECIPE}\n" + yaml.safe_dump(cfg))
    (root / "prep.yaml").write_text("# tunesmith prep configs/prep.yaml\ninput: x.jsonl\n")
    return root


@pytest.fixture()
def board(recipes: Path, tmp_path: Path) -> Iterator[tuple[TestClient, BoardContext]]:
    ctx = BoardContext(runs_dir=tmp_path / "runs", recipes_dir=recipes)
    ctx.runs_dir.mkdir()
    app = FastAPI()
    app.include_router(launch.router(ctx))
    with TestClient(app) as client:
        yield client, ctx
    for job in launch.launcher(ctx).jobs.values():  # never leave a training process behind
        launch.stop(ctx, job, grace=2)


def _form(*overrides: str, **extra: Any) -> dict[str, Any]:
    return {"recipe": RECIPE, "overrides": list(overrides), **extra}


def _wait(predicate: Any, what: str, timeout: float = 300.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_recipes_are_the_training_configs(board: tuple[TestClient, BoardContext]) -> None:
    client, _ = board
    assert client.get("/launch/recipes").json() == [RECIPE]
    page = client.get("/launch").text
    assert f'<option value="{RECIPE}">' in page and "prep.yaml" not in page
    assert '<script src="/static/launch.js">' in page


def test_a_bad_override_names_the_nearest_key(board: tuple[TestClient, BoardContext]) -> None:
    client, ctx = board
    r = client.post("/launch/validate", json=_form("train.max_stepz=4"))
    assert r.status_code == 200 and r.json()["ok"] is False
    (error,) = r.json()["errors"]
    assert "override 'train.max_stepz=4'" in error
    assert "did you mean 'train.max_steps'?" in error
    r = client.post("/launch/start", json=_form("lora.r=zero"))
    assert r.status_code == 400 and "field 'lora.r'" in r.json()["errors"][0]
    assert not any(ctx.runs_dir.iterdir())  # nothing was started


def test_the_board_keys_and_unknown_recipes_are_refused(
    board: tuple[TestClient, BoardContext],
) -> None:
    client, _ = board
    r = client.post("/launch/start", json=_form("train.output_dir=/tmp/x"))
    assert r.status_code == 400 and "runs folder" in r.json()["errors"][0]
    r = client.post("/launch/validate", json=_form("train.resume=true"))
    assert not r.json()["ok"] and "Resume button" in r.json()["errors"][0]
    r = client.post("/launch/validate", json={**_form(), "run_name": "../up"})
    assert not r.json()["ok"] and "run name '../up'" in r.json()["errors"][0]
    assert client.post("/launch/validate", json={"recipe": "../prep.yaml"}).status_code == 404
    assert client.post("/launch/x/stop").status_code == 404
    assert client.post("/launch/..%2F..%2Fetc/stop").status_code in (400, 403, 404)


def test_validation_adds_the_run_folder_name_and_a_checkpoint_cadence(
    board: tuple[TestClient, BoardContext],
) -> None:
    client, ctx = board
    body = client.post("/launch/validate", json=_form("train.max_steps=40", run_name="r1")).json()
    assert body["ok"] and body["method"] == "sft" and body["run_name"] == "r1"
    assert body["overrides"] == ["train.max_steps=40", f"train.output_dir={ctx.runs_dir}",
                                 "train.run_name=r1", "train.save_every=4"]  # fmt: skip
    kept = client.post("/launch/validate", json=_form("train.save_every=7")).json()["overrides"]
    assert [o for o in kept if "save_every" in o] == ["train.save_every=7"]


def test_start_stop_resume_to_the_end(
    board: tuple[TestClient, BoardContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 10-step run stopped after its first checkpoint and resumed: it ends with every step
    logged once, and its output (streamed as SSE) shows the resume."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    client, ctx = board
    started = client.post("/launch/start", json=_form("train.max_steps=10", "train.save_every=1",
                                                      run_name="life")).json()  # fmt: skip
    assert started["state"] == "running" and started["run"] == "/run/life"
    run = ctx.runs_dir / "life"
    _wait(lambda: list(run.glob("checkpoints/step-*")), "the first checkpoint")
    stopped = client.post("/launch/life/stop").json()
    assert stopped["state"] == "stopped" and stopped["resumable"], stopped
    assert not (run / "final").exists()
    saved = json.loads((ctx.runs_dir / ".launch" / "life.json").read_text())
    assert saved["state"] == "stopped" and saved["recipe"] == RECIPE

    assert client.post("/launch/life/resume").json()["state"] == "running"
    assert client.post("/launch/life/resume").status_code == 409  # still running
    done = _wait(
        lambda: [j for j in client.get("/launch/jobs").json() if j["state"] != "running"], "end"
    )
    assert done[0]["state"] == "finished", (ctx.runs_dir / ".launch" / "life.log").read_text()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("split") == "train"] == list(range(1, 11))
    with client.stream("GET", "/launch/life/log") as response:
        events = [json.loads(x[6:]) for x in response.iter_lines() if x.startswith("data: ")]
    text = "".join(e["text"] for e in events if e["type"] == "log")
    assert text.count("-m tunesmith train") == 2 and "--resume" in text
    assert "resumed from" in text
    assert events[-1] == {"type": "end"}
    assert [e["state"] for e in events if e["type"] == "state"] == ["finished"]


def test_runs_of_an_earlier_board_are_tracked_and_stoppable(recipes: Path, tmp_path: Path) -> None:
    """A board restarted while its launched run trains: the run shows as running while its
    process lives, Stop ends it; one whose process is gone shows finished (it left final/)."""
    runs = tmp_path / "runs"
    (runs / ".launch").mkdir(parents=True)
    (runs / "done" / "final").mkdir(parents=True)
    alive = subprocess.Popen(["sleep", "60"], start_new_session=True)
    for name, pid in (("alive", alive.pid), ("done", 2**22 + 7)):
        job = launch.Job(name=name, recipe=RECIPE, overrides=[], method="sft", pid=pid,
                         state="running")  # fmt: skip
        (runs / ".launch" / f"{name}.json").write_text(json.dumps(dataclasses.asdict(job)))
    ctx = BoardContext(runs_dir=runs, recipes_dir=recipes)
    app = FastAPI()
    app.include_router(launch.router(ctx))
    try:
        with TestClient(app) as client:
            states = {j["name"]: j["state"] for j in client.get("/launch/jobs").json()}
            assert states == {"alive": "running", "done": "finished"}
            stopped = client.post("/launch/alive/stop").json()
            assert stopped["state"] == "stopped"
            assert alive.wait(timeout=10) == -signal.SIGTERM
    finally:
        if alive.poll() is None:
            alive.kill()


# ----------------------------------------------------------------------------- in a browser


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_launch_stop_resume_from_the_page(
    recipes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The form: a bad override shows its error inline; Start launches the run, Stop and Resume
    work from the table, and the runs list shows it finished; no console errors."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from tunesmith.board.server import BoardThread

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    ctx = BoardContext(runs_dir=tmp_path / "runs", recipes_dir=recipes)
    ctx.runs_dir.mkdir()
    run = ctx.runs_dir / "web"
    with BoardThread(ctx) as board, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(board.url + "/launch")
            page.fill(".ln-override", "train.max_stepz=4")
            page.click("#ln-validate")
            page.wait_for_selector("#ln-errors li")
            assert "did you mean 'train.max_steps'?" in page.inner_text("#ln-errors")

            page.fill(".ln-override", "train.max_steps=10")
            page.click("#ln-add")
            page.locator(".ln-override").nth(1).fill("train.save_every=1")
            page.fill("#ln-name", "web")
            page.click("#ln-start")
            page.wait_for_selector('tr[data-run="web"] .ln-stop')
            assert page.inner_text("#ln-errors") == ""
            _wait(lambda: list(run.glob("checkpoints/step-*")), "the first checkpoint")
            page.click('tr[data-run="web"] .ln-stop')
            page.wait_for_selector('tr[data-run="web"] .ln-resume', timeout=60_000)
            assert page.inner_text('tr[data-run="web"] .ln-state') == "stopped"
            page.click('tr[data-run="web"] .ln-resume')
            page.wait_for_function(
                "() => document.querySelector('tr[data-run=\"web\"] .ln-state')"
                ".textContent === 'finished'",
                timeout=300_000,
            )
            assert "resumed from" in page.inner_text("#ln-log")
            page.goto(board.url + "/")
            assert page.get_attribute('tr[data-run="web"]', "data-state") == "finished"
            page.wait_for_timeout(200)
            assert errors == []
        finally:
            browser.close()
            for job in launch.launcher(ctx).jobs.values():
                launch.stop(ctx, job, grace=2)
