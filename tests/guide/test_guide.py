"""The guide: every ``guide/<slug>.py`` runs in ``--tiny`` mode and writes a results file holding
its page's table keys; every page shows exactly its results file (or says it has not run);
``tunesmith guide`` lists the eight pages."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "guide"
PAGES = sorted((ROOT / "docs" / "guide").glob("*.md"))
SLUGS = [p.stem for p in PAGES if (GUIDE / f"{p.stem.replace('-', '_')}.py").is_file()]
BLOCK = re.compile(r"<!-- results:begin -->\n(.*?)\n<!-- results:end -->", re.DOTALL)


def _module(name: str) -> Any:
    """A guide script (or ``_common``) imported as a module."""
    if str(GUIDE) not in sys.path:
        sys.path.insert(0, str(GUIDE))
    return importlib.import_module(name)


def test_eight_pages_each_with_a_script_all_in_the_index() -> None:
    assert len(SLUGS) == 8, SLUGS
    index = (ROOT / "docs" / "guide" / "index.md").read_text()
    assert all(f"]({slug}.md)" in index for slug in SLUGS)


@pytest.mark.parametrize("slug", SLUGS)
def test_tiny_run_writes_the_page_table_keys(
    slug: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = ROOT / "docs" / "guide" / f"{slug}.md"
    committed = ROOT / "benchmarks" / "results" / "guide" / f"{slug}.json"
    before = (page.read_text(), committed.read_bytes() if committed.is_file() else None)
    monkeypatch.chdir(ROOT)
    threads = torch.get_num_threads()
    out = tmp_path / f"{slug}.json"
    try:
        assert _module(slug.replace("-", "_")).main(["--tiny", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    results = json.loads(out.read_text())
    assert results["tiny"] and results["slug"] == slug and results["rows"]
    keys = [c["key"] for c in results["columns"]]
    assert all(k in row for row in results["rows"] for k in keys), (keys, results["rows"])
    assert all(len(x) == 3 for x in (results["load_average_start"], results["load_average_end"]))
    svg = out.with_suffix(".svg").read_text()
    assert 'data-points="' in svg and "no data" not in svg
    # --tiny never touches the committed page or results file.
    assert (page.read_text(), committed.read_bytes() if committed.is_file() else None) == before


@pytest.mark.parametrize("slug", SLUGS)
def test_page_shows_its_results_file_or_says_not_run(slug: str) -> None:
    common = _module("_common")
    text = (ROOT / "docs" / "guide" / f"{slug}.md").read_text()
    script = f"python guide/{slug.replace('-', '_')}.py"
    assert f"`{script}`" in text
    block = BLOCK.search(text)
    assert block is not None, "no results block"
    results_file = ROOT / "benchmarks" / "results" / "guide" / f"{slug}.json"
    if results_file.is_file():
        results = json.loads(results_file.read_text())
        assert not results["tiny"]
        assert block.group(1) == common.render_block(results)
        assert (ROOT / "docs" / "guide" / f"{slug}.svg").is_file()
    else:
        assert block.group(1) == f"not run yet: run `{script}`"


PATH = re.compile(r"(?<![\w/.])(?:configs|guide|data|benchmarks)/[\w./-]*[\w]")


@pytest.mark.parametrize("slug", SLUGS)
def test_every_path_a_page_names_exists(slug: str) -> None:
    text = (ROOT / "docs" / "guide" / f"{slug}.md").read_text()
    named = set(PATH.findall(text))
    assert named, "the page names no recipe or script"
    assert not [p for p in named if not (ROOT / p).exists()]


def test_render_block_rows_come_from_the_results() -> None:
    common = _module("_common")
    results = {
        "slug": "x", "title": "X", "command": "python guide/x.py", "wall_seconds": 90.0,
        "generated_utc": "2026-01-02T03:04:05+00:00", "load_average_start": [1.5, 1.0, 1.0],
        "load_average_end": [2.5, 1.0, 1.0], "notes": ["a note"],
        "columns": [{"key": "arm", "label": "arm"}, {"key": "score", "label": "score"}],
        "rows": [{"arm": "lora", "score": 0.8125}, {"arm": "full", "score": None}],
    }  # fmt: skip
    block = common.render_block(results)
    assert "| lora | 0.812 |" in block and "| full | – |" in block
    assert "1.5 min" in block and "benchmarks/results/guide/x.json" in block
    assert block.endswith("a note")


def test_cli_lists_all_pages_and_rejects_an_unknown_one() -> None:
    listed = subprocess.run([sys.executable, "-m", "tunesmith", "guide"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    for slug in SLUGS:
        assert f"{slug}: " in listed
        assert f"guide/{slug.replace('-', '_')}.py" in listed
    assert listed.count("(last run: ") == 8
    bad = subprocess.run([sys.executable, "-m", "tunesmith", "guide", "run", "nope"], cwd=ROOT,
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "lora-rank" in bad.stderr


def test_cli_reruns_a_page_in_tiny_mode_without_touching_the_committed_files() -> None:
    committed = ROOT / "benchmarks" / "results" / "guide" / "packing-precision.json"
    before = committed.read_bytes() if committed.is_file() else None
    done = subprocess.run([sys.executable, "-m", "tunesmith", "guide", "run", "packing_precision",
                           "--tiny"], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = Path(re.findall(r"\[guide\] packing-precision: (\S+\.json)", done.stdout)[-1])
    try:
        assert written != committed and json.loads(written.read_text())["tiny"] is True
    finally:
        shutil.rmtree(written.parent)  # the script's own temporary folder
    assert (committed.read_bytes() if committed.is_file() else None) == before
