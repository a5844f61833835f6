"""``tunesmith guide [run SLUG [--tiny]]``: the guide's experiments, each a page in
``docs/guide/<slug>.md`` with its script ``guide/<slug>.py`` and its results file
``benchmarks/results/guide/<slug>.json`` (all in a checkout of the repository)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tunesmith.errors import UserError


@dataclass(frozen=True)
class Page:
    """One guide page and the files behind it."""

    slug: str
    title: str
    page: Path
    script: Path
    results: Path

    def last_run(self) -> str:
        """The results file's date, or "not run"."""
        if not self.results.is_file():
            return "not run"
        try:
            return str(json.loads(self.results.read_text())["generated_utc"])[:16]
        except (ValueError, KeyError):
            return "unreadable results file"


def checkout_root(start: Path | None = None) -> Path:
    """The repository checkout holding ``guide/`` and ``docs/guide/``: the current folder or
    one above it, else the checkout this package is installed from (editable install)."""
    here = (start or Path.cwd()).resolve()
    package = Path(__file__).resolve().parents[3]
    for candidate in [here, *here.parents, package]:
        if (candidate / "guide" / "_common.py").is_file() and (candidate / "docs/guide").is_dir():
            return candidate
    raise UserError("tunesmith guide: run it inside a tunesmith checkout (no guide/ folder found)")


def pages(root: Path) -> list[Page]:
    """Every page under ``docs/guide/`` that has a script (an index page has none), by name."""
    found = []
    for md in sorted((root / "docs" / "guide").glob("*.md")):
        first = md.read_text(encoding="utf-8").splitlines()[:1]
        title = first[0].lstrip("# ").strip() if first else md.stem
        script = root / "guide" / f"{md.stem.replace('-', '_')}.py"
        results = root / "benchmarks" / "results" / "guide" / f"{md.stem}.json"
        if script.is_file():
            found.append(Page(md.stem, title, md, script, results))
    return found


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("guide", help="the guide's experiments: list them, or rerun one")
    p.set_defaults(func=cmd_list)
    actions = p.add_subparsers(dest="guide_command")
    run = actions.add_parser("run", help="rerun one page's experiment (rewrites its results)")
    run.add_argument("slug", help="the page's name, e.g. lora-rank (see `tunesmith guide`)")
    run.add_argument(
        "--tiny", action="store_true", help="a tiny random model, seconds; writes to a temp folder"
    )
    run.set_defaults(func=cmd_run)


def cmd_list(args: argparse.Namespace) -> int:
    """One block per page: title, script, results file and when it last ran."""
    root = checkout_root()
    for page in pages(root):
        print(f"{page.slug}: {page.title}")
        print(f"  script   {page.script.relative_to(root)}")
        print(f"  results  {page.results.relative_to(root)}  (last run: {page.last_run()})")
    print("\nrerun one: tunesmith guide run SLUG [--tiny]")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the page's script with this Python; its exit status."""
    root = checkout_root()
    by_slug = {p.slug: p for p in pages(root)}
    page = by_slug.get(args.slug.replace("_", "-"))
    if page is None:
        raise UserError(f"tunesmith guide run: no page {args.slug!r}; one of {', '.join(by_slug)}")
    if not page.script.is_file():
        raise UserError(f"tunesmith guide run: {page.script} is missing")
    command = [sys.executable, str(page.script), *(["--tiny"] if args.tiny else [])]
    return subprocess.call(command, cwd=root)
