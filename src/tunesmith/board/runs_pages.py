"""The runs list (``/``), one run (``/run/{path}``, its live event stream, rejects pages and
pre-flight reports) and the comparison of runs (``/compare?run=A&run=B``).

Every path from the browser goes through :meth:`BoardContext.resolve` (403 outside the runs
folder); errors name the path as given, never the server's absolute path.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)

from tunesmith.board import run_sections as sec
from tunesmith.board.context import BoardContext
from tunesmith.board.layout import esc, page
from tunesmith.board.run_sections import url_path
from tunesmith.board.runs import STATES, RunSummary, is_run, list_runs, summarize

POLL_S = 0.5  # how often the event stream looks for new metrics lines
END_AFTER_IDLE_S = 2.0  # an ended run's stream closes after this long without new lines
PREFLIGHT_TIMEOUT_S = 600  # `tunesmith doctor` on a run's config (it times one training step)


def _run_dir(ctx: BoardContext, relative: str) -> Path:
    """The run directory ``relative`` names, confined to the runs folder; 404 if not a run."""
    path = ctx.resolve(relative)
    if not path.is_dir() or not is_run(path):
        raise HTTPException(status_code=404, detail=f"'{relative}' is not a run directory")
    return path


def _filter_form(method: str, state: str, methods: list[str]) -> str:
    def options(values: list[str], chosen: str) -> str:
        opts = ['<option value="">any</option>']
        opts += [
            f'<option value="{esc(v)}"{" selected" if v == chosen else ""}>{esc(v)}</option>'
            for v in values
        ]
        return "".join(opts)

    return (
        '<form class="filter" method="get" action="/">'
        f'<label>method <select name="method">{options(methods, method)}</select></label> '
        f'<label>state <select name="state">{options(list(STATES), state)}</select></label> '
        '<button type="submit">filter</button></form>'
    )


def _runs_table(runs: list[RunSummary]) -> str:
    if not runs:
        return "<p>no runs match</p>"
    head = ["", "run", "method", "state", "started (UTC)", "steps", "best", "tokens/s", "base"]
    rows = []
    for r in runs:
        link = f'<a href="/run/{esc(sec.url_path(r.path))}">{esc(r.path)}</a>'
        pick = f'<input type="checkbox" name="run" value="{esc(r.path)}">'
        cells = [r.method, r.state, sec.when(r.started), r.steps, sec.best_text(r),
                 sec.fmt(r.tokens_per_s)]  # fmt: skip
        base = r.base_model or "-"
        rows.append(
            f'<tr data-run="{esc(r.path)}" data-state="{esc(r.state)}"><td>{pick}</td>'
            f"<td>{link}</td>"
            + "".join(f"<td>{esc(c)}</td>" for c in cells)
            + f'<td title="{esc(base)}">{esc(Path(base).name or base)}</td></tr>'
        )
    return (
        '<form method="get" action="/compare"><table class="runs"><thead><tr>'
        + "".join(f"<th>{esc(h)}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + '</tbody></table><button type="submit">compare selected</button></form>'
    )


def runs_page(ctx: BoardContext, method: str, state: str) -> str:
    everything = list_runs(ctx.runs_dir)
    methods = sorted({r.method for r in everything})
    shown = [r for r in everything if (not method or r.method == method)]
    shown = [r for r in shown if not state or r.state == state]
    live = any(r.state == "running" for r in everything)
    body = (
        _filter_form(method, state, methods)
        + f'<div id="runs" data-autorefresh="{"1" if live else "0"}">'
        + f"<p>{len(shown)} of {len(everything)} run(s) in the runs folder</p>"
        + _runs_table(shown)
        + "</div>"
    )
    return page("Runs", body)


def _marker(run_dir: Path) -> str | None:
    for name in ("FAILED", "PRUNED"):
        file = run_dir / name
        if file.is_file():
            return f"{name}: {file.read_text(encoding='utf-8', errors='replace').strip()[:500]}"
    return None


def _forgetting_and_memorization(run_dir: Path) -> list[tuple[str, str]]:
    from tunesmith.report.memorization_panel import memorization_section
    from tunesmith.report.run_page import forgetting_section
    from tunesmith.report.rundata import ReportError, load_run

    out = []
    try:
        data = load_run(run_dir)
    except ReportError:
        data = None
    if data is not None and (data.forgetting is not None or data.rows("forgetting")):
        out.append(("Forgetting", forgetting_section(data)))
    if (memorization := memorization_section(run_dir)) is not None:
        out.append(("Memorization", memorization))
    return out


def run_page(ctx: BoardContext, relative: str, rejects_page: int) -> str:
    run_dir = _run_dir(ctx, relative)
    shown = ctx.shown(run_dir)
    summary = summarize(ctx.runs_dir.resolve(), run_dir)
    sections: list[tuple[str, str]] = [
        ("Summary", sec.summary_table(summary, _marker(run_dir))),
        ("Curves (live)", sec.live_charts(shown, summary.method)),
    ]
    if (evals := sec.eval_section(run_dir)) is not None:
        sections.append(("Evaluation", evals))
    sections += _forgetting_and_memorization(run_dir)
    sections.append(("Pre-flight", sec.preflight_section(run_dir, shown)))
    if (rejects := sec.rejects_table(run_dir, shown, rejects_page)) is not None:
        sections.append(("Rejected records", rejects))
    if (lineage := sec.lineage_section(run_dir)) is not None:
        sections.append(("Lineage", lineage))
    config = run_dir / "config.yaml"
    if config.is_file():
        text = config.read_text(encoding="utf-8", errors="replace")
        sections.append(("Resolved config", f"<pre>{esc(text)}</pre>"))
    body = "".join(
        f'<section id="{esc(title.split()[0].lower())}"><h2>{esc(title)}</h2>{html}</section>'
        for title, html in sections
    )
    compare = f'<p><a href="/compare?run={esc(sec.url_path(shown))}">compare with…</a></p>'
    return page(f"Run {shown}", compare + body)


async def metric_events(
    request: Request, run_dir: Path, poll_s: float = POLL_S
) -> AsyncIterator[str]:
    """Server-sent events tailing ``metrics.jsonl``: every existing line, ``event: ready``,
    then each new line as it is appended; ``event: end`` once the run has ended (final/,
    FAILED or PRUNED) and no line came for :data:`END_AFTER_IDLE_S`."""
    from tunesmith.board.runs import run_state

    metrics, offset, buffer, ready = run_dir / "metrics.jsonl", 0, b"", False
    idle = 0.0
    while not await request.is_disconnected():
        chunk = b""
        if metrics.is_file():
            with metrics.open("rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
            offset += len(chunk)
        lines = (buffer + chunk).split(b"\n")
        buffer = lines.pop()
        for line in lines:
            if line.strip():
                yield f"data: {line.decode('utf-8', errors='replace').strip()}\n\n"
        if not ready:
            ready = True
            yield "event: ready\ndata: {}\n\n"
        idle = 0.0 if lines else idle + poll_s
        if idle >= END_AFTER_IDLE_S and run_state(run_dir) in ("finished", "failed", "pruned"):
            yield f"event: end\ndata: {json.dumps({'state': run_state(run_dir)})}\n\n"
            return
        await asyncio.sleep(poll_s)


def preflight_report(ctx: BoardContext, relative: str, name: str, where: str) -> HTMLResponse:
    """A ``tunesmith doctor`` page from the run dir (``where=run``) or the folder it sits in,
    served sandboxed: a report file is data, never script with the board's origin."""
    run_dir = _run_dir(ctx, relative)
    folder = run_dir if where == "run" else run_dir.parent
    if not name.startswith("doctor-") or not name.endswith(".html") or "/" in name:
        raise HTTPException(status_code=404, detail=f"'{name}' is not a pre-flight report")
    file = ctx.resolve(str((folder / name).relative_to(ctx.runs_dir.resolve())))
    if not file.is_file():
        raise HTTPException(status_code=404, detail=f"'{name}' does not exist")
    headers = {"Content-Security-Policy": "sandbox"}
    return HTMLResponse(file.read_text(encoding="utf-8", errors="replace"), headers=headers)


def run_preflight(ctx: BoardContext, relative: str) -> str:
    """Run ``tunesmith doctor`` on the run's resolved ``config.yaml`` (every method's pre-flight
    checks, the model included), writing ``doctor-<time>.html`` into the run dir; its name."""
    run_dir = _run_dir(ctx, relative)
    if not (run_dir / "config.yaml").is_file():
        raise HTTPException(status_code=400, detail=f"'{relative}' has no config.yaml to check")
    name = f"doctor-{time.strftime('%Y%m%d-%H%M%S')}.html"
    cmd = [sys.executable, "-m", "tunesmith", "doctor", str(run_dir / "config.yaml"),
           "--html", str(run_dir / name)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=PREFLIGHT_TIMEOUT_S)
    if not (run_dir / name).is_file():  # doctor exits 1 on a FAIL but still writes its report
        raise HTTPException(
            status_code=400,
            detail=f"tunesmith doctor could not check '{relative}' (exit {done.returncode}); "
            f"run `tunesmith doctor {relative}/config.yaml` in a terminal to see why",
        )
    return name


def _logged_run(ctx: BoardContext, relative: str) -> Path:
    """A run dir with a ``metrics.jsonl`` (something to compare); 400 otherwise."""
    run_dir = _run_dir(ctx, relative)
    if not (run_dir / "metrics.jsonl").is_file():
        raise HTTPException(status_code=400, detail=f"'{relative}' logged no metrics")
    return run_dir


def router(ctx: BoardContext) -> APIRouter:
    """The runs list, one run, its event stream, rejects, pre-flight and the compare page."""
    r = APIRouter()

    @r.get("/", response_class=HTMLResponse)
    def index(method: str = "", state: str = "") -> str:
        return runs_page(ctx, method, state)

    @r.get("/api/runs")
    def runs_json(method: str = "", state: str = "") -> JSONResponse:
        rows = list_runs(ctx.runs_dir, method or None, state or None)
        return JSONResponse([_as_json(x) for x in rows])

    @r.get("/run/{relative:path}", response_class=HTMLResponse)
    def one_run(relative: str, rejects: Annotated[int, Query(ge=0)] = 0) -> str:
        return run_page(ctx, relative, rejects)

    @r.get("/api/run/{relative:path}/events")
    def events(relative: str, request: Request) -> StreamingResponse:
        run_dir = _run_dir(ctx, relative)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(
            metric_events(request, run_dir), media_type="text/event-stream", headers=headers
        )

    @r.get("/preflight/{relative:path}")
    def preflight(relative: str, name: str, where: str = "run") -> Response:
        return preflight_report(ctx, relative, name, where)

    @r.post("/run/{relative:path}/preflight")
    async def preflight_now(relative: str) -> RedirectResponse:
        await asyncio.to_thread(run_preflight, ctx, relative)
        return RedirectResponse(f"/run/{url_path(relative)}#preflight", status_code=303)

    @r.get("/compare", response_class=HTMLResponse)
    def compare(run: Annotated[list[str] | None, Query()] = None) -> str:
        from tunesmith.board.compare_page import compare_page

        return compare_page(ctx, [_logged_run(ctx, x) for x in run or []])

    return r


def _as_json(run: RunSummary) -> dict[str, Any]:
    best = run.best
    return {
        "path": run.path, "method": run.method, "state": run.state, "started": run.started,
        "steps": run.steps, "tokens_per_s": run.tokens_per_s, "base_model": run.base_model,
        "best": None if best is None else {"label": best.label, "value": best.value,
                                            "higher_is_better": best.higher_is_better},
    }  # fmt: skip


__all__ = ["metric_events", "router", "run_page", "runs_page"]
