"""The Launch page: a shipped recipe plus overrides in, a training subprocess out; stop, resume.

* The recipes are the ``configs/**.yaml`` files (``ctx.recipes_dir``, default
  :func:`tunesmith.cli.train.recipes_dir`) whose first line is a ``# tunesmith train`` command.
* A start is validated first with the loader ``tunesmith validate`` and ``train`` use
  (:func:`tunesmith.config.load_config` with the ``key.sub=value`` overrides): its message names
  the override and the nearest valid key, and the page shows it beside the form.
* The board adds ``train.output_dir=<runs folder>`` and ``train.run_name=<name>`` (so the run
  lands where the board looks, and ``--resume`` finds it by name) and, when neither recipe nor
  overrides set one, a ``train.save_every`` cadence: a stopped run is resumed from its last
  checkpoint (:meth:`tunesmith.engine.run.Run.restore`), so without checkpoints there is nothing
  to resume from.
* The run is ``python -m tunesmith train RECIPE OVERRIDES...`` in a session of its own, its output
  in ``<runs>/.launch/<name>.log`` and what the page needs to resume it in
  ``<runs>/.launch/<name>.json`` (beside the run dir: a fresh run must start in an empty one).
* Stop: SIGTERM to the process group, SIGKILL after :data:`STOP_GRACE_S`. Checkpoints are written
  atomically, so the latest complete one survives either signal. Resume: the same command with
  ``--resume`` after the overrides, as ``tunesmith train`` expects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from tunesmith.board.context import BoardContext
from tunesmith.board.layout import esc, page

STOP_GRACE_S = 10.0
LOG_POLL_S = 0.25
DEFAULT_SAVE_EVERY = 50  # the shipped recipes' cadence
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
BOARD_KEYS = {
    "train.output_dir": "the board starts runs in its runs folder",
    "train.resume": "use the Resume button of a stopped run",
}
JOBS_DIR = ".launch"
STYLE = (  # the page's own layout
    "#ln-form label{display:block;margin:.3em 0}.ln-override{width:30em;margin:.15em 0}"
    "#ln-log{max-height:24em;overflow:auto;white-space:pre-wrap;background:#f6f6f6;padding:.5em}"
    "#ln-jobs td{padding:.2em .6em}"
)


# ----------------------------------------------------------------------------- recipes


def recipes_root(ctx: BoardContext) -> Path:
    if ctx.recipes_dir is not None:
        return ctx.recipes_dir
    from tunesmith.cli.train import recipes_dir

    return recipes_dir()


def list_recipes(ctx: BoardContext) -> list[str]:
    """The training recipes, as paths relative to the recipes folder."""
    root = recipes_root(ctx)
    found = []
    for path in sorted(root.rglob("*.yaml")) if root.is_dir() else []:
        with path.open(encoding="utf-8") as fh:
            if fh.readline().startswith("# tunesmith train"):
                found.append(path.relative_to(root).as_posix())
    return found


def recipe_path(ctx: BoardContext, name: str) -> Path:
    """The recipe ``name`` (one :func:`list_recipes` offers), else 404."""
    if name not in list_recipes(ctx):
        raise HTTPException(status_code=404, detail=f"no recipe '{name}'")
    return recipes_root(ctx) / name


# ----------------------------------------------------------------------------- checking a start


class LaunchForm(BaseModel):
    """What the Launch form sends."""

    model_config = ConfigDict(extra="forbid")

    recipe: str
    overrides: list[str] = Field(default_factory=list, max_length=64)
    run_name: str | None = None


class Refused(Exception):
    """A start the page refuses; ``errors`` are shown beside the form."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def _user_overrides(form: LaunchForm) -> tuple[list[str], str | None]:
    """The non-empty override rows, and the run name they set (``train.run_name=``)."""
    rows = [o.strip() for o in form.overrides if o.strip()]
    errors, name = [], form.run_name.strip() if form.run_name else None
    for row in rows:
        key = row.partition("=")[0].strip()
        if key in BOARD_KEYS:
            errors.append(f"override '{row}': {BOARD_KEYS[key]}")
        elif key == "train.run_name":
            name = row.partition("=")[2].strip()
    if errors:
        raise Refused(errors)
    return [r for r in rows if r.partition("=")[0].strip() != "train.run_name"], name


def _run_name(ctx: BoardContext, recipe: str, asked: str | None) -> str:
    if asked is not None:
        if not NAME.fullmatch(asked):
            raise Refused([f"run name '{asked}': use letters, digits and . _ - (max 100)"])
        if (ctx.runs_dir / asked).exists():
            raise Refused([f"run name '{asked}': a run of that name exists; choose another"])
        return asked
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", Path(recipe).stem)
    name = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    base, n = name, 2
    while (ctx.runs_dir / name).exists() or (_jobs_dir(ctx) / f"{name}.json").exists():
        name, n = f"{base}-{n}", n + 1
    return name


def check(ctx: BoardContext, form: LaunchForm) -> tuple[Path, list[str], str, str]:
    """(recipe path, the full override list, run name, method) of a start; :class:`Refused`
    with the loader's messages when the config is not valid."""
    from tunesmith.config import load_config
    from tunesmith.errors import UserError

    path = recipe_path(ctx, form.recipe)
    rows, asked = _user_overrides(form)
    name = _run_name(ctx, form.recipe, asked)
    overrides = [*rows, f"train.output_dir={ctx.runs_dir}", f"train.run_name={name}"]
    try:
        cfg = load_config(path, overrides)
    except (UserError, ValueError) as e:  # ConfigError: file, line or override, nearest key
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise Refused([line for line in lines if line != "invalid config:"] or lines) from None
    if cfg.train.save_every is None:  # a stopped run resumes from a checkpoint: make some
        steps = cfg.train.max_steps
        every = (
            DEFAULT_SAVE_EVERY if steps is None else max(1, min(DEFAULT_SAVE_EVERY, steps // 10))
        )
        overrides.append(f"train.save_every={every}")
    return path, overrides, name, cfg.method


# ----------------------------------------------------------------------------- jobs


@dataclass
class Job:
    """One launched run; saved as ``<runs>/.launch/<name>.json``."""

    name: str
    recipe: str
    overrides: list[str]
    method: str
    pid: int | None = None
    state: str = "starting"  # running | finished | failed | stopped
    returncode: int | None = None
    stopped: bool = False
    started: float = field(default_factory=time.time)


@dataclass
class Launcher:
    """``ctx.extra["launch"]``: the jobs this board started, with their processes."""

    jobs: dict[str, Job] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)


def launcher(ctx: BoardContext) -> Launcher:
    found = ctx.extra.get("launch")
    if not isinstance(found, Launcher):
        found = ctx.extra["launch"] = Launcher()
        for saved in sorted(_jobs_dir(ctx).glob("*.json")):  # jobs of an earlier board
            try:
                job = Job(**json.loads(saved.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError):
                continue
            found.jobs[job.name] = job
    return found


def _jobs_dir(ctx: BoardContext) -> Path:
    return ctx.runs_dir / JOBS_DIR


def log_path(ctx: BoardContext, name: str) -> Path:
    return _jobs_dir(ctx) / f"{name}.log"


def _save(ctx: BoardContext, job: Job) -> None:
    folder = _jobs_dir(ctx)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{job.name}.json.tmp"
    tmp.write_text(json.dumps(asdict(job), indent=1), encoding="utf-8")
    tmp.replace(folder / f"{job.name}.json")


def _spawn(ctx: BoardContext, job: Job, resume: bool) -> None:
    """``python -m tunesmith train RECIPE OVERRIDES [--resume]`` in a session of its own, from
    the recipes' checkout (recipes name data files relative to it)."""
    root = recipes_root(ctx)
    cmd = [sys.executable, "-m", "tunesmith", "train", str(root / job.recipe), *job.overrides]
    cmd += ["--resume"] if resume else []
    log = log_path(ctx, job.name)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"$ {' '.join(cmd[1:])}\n".encode())
        out.flush()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(  # our own interpreter and CLI, no shell
            cmd, cwd=root.parent, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip
    launcher(ctx).procs[job.name] = proc
    job.pid, job.state, job.returncode, job.stopped = proc.pid, "running", None, False
    _save(ctx, job)


def _alive(pid: int | None) -> bool:
    """A process ``pid`` exists (a run an earlier board started, still training)."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process now holds the id
        return False
    stat = Path(f"/proc/{pid}/stat")  # Linux: a zombie (exited, not yet reaped) is not alive
    with contextlib.suppress(OSError, IndexError):
        return stat.read_text().rpartition(")")[2].split()[0] != "Z"
    return True


def refresh(ctx: BoardContext, job: Job) -> Job:
    """``job`` with the state of its process (saved when it changed). A run an earlier board
    started is running while its process lives, then finished if it left ``final/``."""
    if job.state not in ("starting", "running"):
        return job
    proc = launcher(ctx).procs.get(job.name)
    if proc is None:
        if not _alive(job.pid):
            job.state = "finished" if (ctx.runs_dir / job.name / "final").is_dir() else "failed"
            job.state = "stopped" if job.stopped else job.state
            _save(ctx, job)
        return job
    code = proc.poll()
    if code is not None:
        job.returncode = code
        job.state = "stopped" if job.stopped else ("finished" if code == 0 else "failed")
        _save(ctx, job)
    return job


def _job(ctx: BoardContext, name: str) -> Job:
    if not NAME.fullmatch(name):
        raise HTTPException(status_code=400, detail=f"'{name}' is not a run name")
    ctx.resolve(name)  # 403 outside the runs folder
    job = launcher(ctx).jobs.get(name)
    if job is None:
        raise HTTPException(status_code=404, detail=f"no launched run '{name}'")
    return refresh(ctx, job)


def stop(ctx: BoardContext, job: Job, grace: float = STOP_GRACE_S) -> Job:
    """SIGTERM the run's process group; SIGKILL it if it is still there after ``grace`` s."""
    proc = launcher(ctx).procs.get(job.name)
    if proc is None:  # started by an earlier board
        return _stop_orphan(ctx, job, grace)
    if proc.poll() is not None:
        return refresh(ctx, job)
    job.stopped = True
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:  # it ended between the poll and the signal
        proc.wait()
    return refresh(ctx, job)


def _stop_orphan(ctx: BoardContext, job: Job, grace: float) -> Job:
    """:func:`stop` for a process this board did not start (no handle to wait on: poll)."""
    if job.state != "running" or not _alive(job.pid):
        return refresh(ctx, job)
    job.stopped = True
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid or 0, sig)
        deadline = time.monotonic() + wait
        while _alive(job.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _alive(job.pid):
            break
    return refresh(ctx, job)


def resumable(ctx: BoardContext, job: Job) -> bool:
    from tunesmith.engine.checkpoint import list_checkpoints

    run = ctx.runs_dir / job.name
    return job.state in ("stopped", "failed") and run.is_dir() and bool(list_checkpoints(run))


def resume(ctx: BoardContext, job: Job) -> Job:
    """Start ``job`` again with ``--resume`` (409 while it runs or with no checkpoint yet)."""
    if job.state in ("starting", "running"):
        raise HTTPException(status_code=409, detail=f"'{job.name}' is still running")
    if not resumable(ctx, job):
        raise HTTPException(
            status_code=409,
            detail=f"'{job.name}' has no checkpoint to resume from (it stopped before its "
            "first train.save_every step): start it again",
        )
    _spawn(ctx, job, True)
    return job


def _row(ctx: BoardContext, job: Job) -> dict[str, Any]:
    refresh(ctx, job)
    return {**asdict(job), "resumable": resumable(ctx, job), "run": f"/run/{job.name}"}


async def _log_events(ctx: BoardContext, name: str) -> AsyncIterator[str]:
    """The log from its start, then what is appended, until the process has ended."""
    path, offset, last = log_path(ctx, name), 0, None
    while True:
        job = refresh(ctx, launcher(ctx).jobs[name])
        text = ""
        if path.is_file():
            with path.open("rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
            offset += len(chunk)
            text = chunk.decode("utf-8", errors="replace")
        if text:
            yield _sse({"type": "log", "text": text})
        if job.state != last:
            last = job.state
            yield _sse({"type": "state", **_row(ctx, job)})
        if not text and job.state not in ("starting", "running"):
            yield _sse({"type": "end"})
            return
        await asyncio.sleep(LOG_POLL_S)


def _sse(event: dict[str, Any]) -> str:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"


# ----------------------------------------------------------------------------- the page


def _form(recipes: list[str]) -> str:
    options = "".join(f'<option value="{esc(r)}">{esc(r)}</option>' for r in recipes)
    none = "" if recipes else "<p>No recipes found.</p>"
    return (
        f"<style>{STYLE}</style>{none}<form id='ln-form'>"
        f"<label>Recipe <select name='recipe' id='ln-recipe'>{options}"
        "</select></label><label>Run name <input type='text' name='run_name' id='ln-name' "
        "placeholder='default: recipe-time'></label><fieldset id='ln-overrides'>"
        "<legend>Overrides (key.sub=value)</legend><div class='ln-row'><input type='text' "
        "class='ln-override' placeholder='train.max_steps=4'></div></fieldset>"
        "<button type='button' id='ln-add'>Add a row</button> "
        "<button type='button' id='ln-validate'>Validate</button> "
        "<button type='submit' id='ln-start'>Start</button></form>"
        "<ul id='ln-errors' class='error' role='alert'></ul><p id='ln-message'></p>"
        "<h2>Launched runs</h2><table id='ln-jobs'><thead><tr><th>run</th><th>recipe</th>"
        "<th>state</th><th></th></tr></thead><tbody></tbody></table>"
        "<h2>Output <span id='ln-log-name'></span></h2><pre id='ln-log'></pre>"
    )


def _refused(e: Refused) -> JSONResponse:
    return JSONResponse({"ok": False, "errors": e.errors}, status_code=400)


def router(ctx: BoardContext) -> APIRouter:
    """The Launch page and its JSON/SSE endpoints under ``/launch``."""
    api = APIRouter()
    _form_routes(api, ctx)
    _job_routes(api, ctx)
    return api


def _form_routes(api: APIRouter, ctx: BoardContext) -> None:
    """The page, the recipes, validating and starting."""

    @api.get("/launch", response_class=HTMLResponse)
    async def launch_page() -> str:
        recipes = await asyncio.to_thread(list_recipes, ctx)
        return page("Launch", _form(recipes), scripts=("launch.js",))

    @api.get("/launch/recipes")
    async def recipes() -> list[str]:
        return await asyncio.to_thread(list_recipes, ctx)

    @api.post("/launch/validate")
    async def validate(form: LaunchForm) -> dict[str, Any]:
        """The verdict (200 either way: an invalid config is an answer, not a failed call)."""
        try:
            _, overrides, name, method = await asyncio.to_thread(check, ctx, form)
        except Refused as e:
            return {"ok": False, "errors": e.errors}
        return {"ok": True, "method": method, "run_name": name, "overrides": overrides}

    @api.post("/launch/start", response_model=None)
    async def start(form: LaunchForm) -> JSONResponse | dict[str, Any]:
        try:
            _, overrides, name, method = await asyncio.to_thread(check, ctx, form)
        except Refused as e:
            return _refused(e)
        job = Job(name=name, recipe=form.recipe, overrides=overrides, method=method)
        launcher(ctx).jobs[name] = job
        await asyncio.to_thread(_spawn, ctx, job, False)
        return {"ok": True, **_row(ctx, job)}


def _job_routes(api: APIRouter, ctx: BoardContext) -> None:
    """The launched runs: list, stop, resume, and the output as server-sent events."""

    @api.get("/launch/jobs")
    async def jobs() -> list[dict[str, Any]]:
        found = sorted(launcher(ctx).jobs.values(), key=lambda j: j.started, reverse=True)
        return [_row(ctx, j) for j in found]

    @api.post("/launch/{name}/stop")
    async def stop_run(name: str) -> dict[str, Any]:
        job = await asyncio.to_thread(stop, ctx, _job(ctx, name))
        return _row(ctx, job)

    @api.post("/launch/{name}/resume")
    async def resume_run(name: str) -> dict[str, Any]:
        job = await asyncio.to_thread(resume, ctx, _job(ctx, name))
        return _row(ctx, job)

    @api.get("/launch/{name}/log")
    async def log(name: str) -> StreamingResponse:
        _job(ctx, name)
        return StreamingResponse(
            _log_events(ctx, name),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
