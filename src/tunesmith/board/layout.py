"""The page shell every board page uses: title, navigation, the bundled CSS and JavaScript."""

from __future__ import annotations

import html

NAV = (
    ("/", "Runs"),
    ("/compare", "Compare"),
    ("/playground", "Playground"),
    ("/launch", "Launch"),
    ("/guide", "Guide"),
)


def esc(text: object) -> str:
    """``text`` escaped for HTML (quotes included)."""
    return html.escape(str(text), quote=True)


def page(title: str, body: str, *, scripts: tuple[str, ...] = ()) -> str:
    """A whole HTML page: ``body`` is trusted HTML built with :func:`esc`; ``scripts`` are
    names of files under ``/static/`` loaded after the body (``board.js`` always is)."""
    nav = " ".join(f'<a href="{href}">{esc(label)}</a>' for href, label in NAV)
    tags = "".join(
        f'<script src="/static/{esc(name)}"></script>' for name in ("board.js", *scripts)
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{esc(title)} · tunesmith board</title>"
        "<link rel='stylesheet' href='/static/board.css'></head>"
        f"<body><nav>{nav}</nav><main><h1>{esc(title)}</h1>{body}</main>{tags}</body></html>"
    )
