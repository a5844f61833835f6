"""``/guide`` (the list of guide pages) and ``/guide/{name}`` (one page, rendered).

The guide is ``docs/guide/*.md`` of a checkout; each page answers one question with an
experiment its script reruns. Markdown is rendered by ``markdown-it-py`` with raw HTML off, so a
page can hold no script; a guide's images and result files (any other file under the guide
folder) are served as they are, confined to that folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

from tunesmith.board.context import BoardContext
from tunesmith.board.layout import esc, page

PAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
ASSET_TYPES = {
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".csv": "text/csv",
    ".json": "application/json",
    ".txt": "text/plain",
}


def guide_pages(guide_dir: Path) -> list[tuple[str, str]]:
    """``(name, title)`` of every ``*.md`` in the guide folder, sorted by name; the title is
    the first ``# `` heading (else the name)."""
    out = []
    for file in sorted(guide_dir.glob("*.md")):
        title = file.stem
        for line in file.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("# "):
                title = line[2:].strip()
                break
        out.append((file.stem, title))
    return out


def render_markdown(text: str) -> str:
    """CommonMark with tables, raw HTML disabled (it is shown as text)."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def _without_title(text: str) -> str:
    """The page without its first ``# `` heading (the page shell shows it as the title)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# "):
            return "\n".join(lines[:i] + lines[i + 1 :])
        if line.strip():
            break
    return text


def _no_guide() -> str:
    return page(
        "Guide",
        "<p>The guide ships in the repository checkout (<code>docs/guide/</code>): run "
        "<code>tunesmith board</code> from a clone of tunesmith to read it here.</p>",
    )


def _confined(guide_dir: Path, name: str) -> Path:
    root = guide_dir.resolve()
    target = (root / name).resolve()
    if root not in target.parents:
        raise HTTPException(status_code=403, detail=f"'{name}' is outside the guide folder")
    return target


def router(ctx: BoardContext) -> APIRouter:
    """``/guide`` and ``/guide/{name}`` (a page by its file stem, or one of its files)."""
    r = APIRouter()

    @r.get("/guide", response_class=HTMLResponse)
    def index() -> str:
        if ctx.guide_dir is None or not ctx.guide_dir.is_dir():
            return _no_guide()
        items = "".join(
            f'<li><a href="/guide/{esc(name)}">{esc(title)}</a></li>'
            for name, title in guide_pages(ctx.guide_dir)
        )
        body = f"<ul class='guide'>{items}</ul>" if items else "<p>the guide has no pages yet</p>"
        return page("Guide", body)

    @r.get("/guide/{name:path}", response_model=None)
    def one(name: str) -> HTMLResponse | FileResponse:
        if ctx.guide_dir is None or not ctx.guide_dir.is_dir():
            return HTMLResponse(_no_guide(), status_code=404)
        target = _confined(ctx.guide_dir, name)
        suffix = target.suffix.lower()
        if suffix in ASSET_TYPES and target.is_file():
            return FileResponse(target, media_type=ASSET_TYPES[suffix])
        stem = name.removesuffix(".md")
        file = ctx.guide_dir / f"{stem}.md"
        if not PAGE_NAME.match(stem) or not file.is_file():
            raise HTTPException(status_code=404, detail=f"no guide page '{name}'")
        text = file.read_text(encoding="utf-8", errors="replace")
        title = dict(guide_pages(ctx.guide_dir)).get(stem, stem)
        html = render_markdown(_without_title(text))
        return HTMLResponse(page(title, f'<article class="guide">{html}</article>'))

    return r
