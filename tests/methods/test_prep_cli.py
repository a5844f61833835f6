"""``tunesmith prep`` through the real CLI on the shipped example with planted problems."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from tunesmith.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "data" / "examples" / "prep"
RECIPE = "configs/prep/example.yaml"
SPLITS = ("train", "validation", "test")


def planted() -> dict[str, Any]:
    return json.loads((EXAMPLE / "planted.json").read_text(encoding="utf-8"))


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def run_prep_cli(out: Path, monkeypatch: pytest.MonkeyPatch, *overrides: str) -> dict[str, Any]:
    monkeypatch.chdir(ROOT)  # the recipe's paths are relative to the checkout
    assert main(["prep", RECIPE, f"output_dir={out}", "progress=false", *overrides]) == 0
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prep") / "out"
    with pytest.MonkeyPatch.context() as mp:
        run_prep_cli(out, mp)
    return out


def test_recipe_starts_with_its_command() -> None:
    assert (ROOT / RECIPE).read_text().splitlines()[0] == f"# tunesmith prep {RECIPE}"


def test_example_data_is_what_the_script_writes(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "make_prep_example.py"
    subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path)], check=True, capture_output=True
    )
    for name in ("raw.jsonl", "test.jsonl", "planted.json"):
        assert (tmp_path / name).read_bytes() == (EXAMPLE / name).read_bytes(), name


def test_removes_exactly_the_planted_rows(example_run: Path) -> None:
    report = json.loads((example_run / "report.json").read_text())
    plan = planted()
    assert {r: n for r, n in report["removed_by_rule"].items() if n} == plan["counts"]
    rejects = read(example_run / "rejects.jsonl")
    by_line = {str(r["line"]): r["rule"] for r in rejects if r["rule"] != "cap"}
    assert by_line == plan["expected_rule_by_line"]
    capped = [r for r in rejects if r["rule"] == "cap"]
    assert len(capped) == plan["cap"]["removed"]
    assert all(r["record"]["meta"]["task"] == plan["cap"]["tag"] for r in capped)
    assert report["tags"][plan["cap"]["tag"]]["kept"] == plan["cap"]["cap"]


def test_kept_plus_rejected_is_input(example_run: Path) -> None:
    kept = [r for name in SPLITS for r in read(example_run / f"{name}.jsonl")]
    rejects = read(example_run / "rejects.jsonl")
    lines = sorted([r["line"] for r in kept] + [r["line"] for r in rejects])
    assert lines == list(range(1, planted()["rows"] + 1))
    report = json.loads((example_run / "report.json").read_text())
    assert report["counts"] == {"input": len(lines), "kept": len(kept), "rejected": len(rejects)}
    assert all(r["source"] == "data/examples/prep/raw.jsonl" for r in kept)
    assert all({"rule", "source", "line", "reason"} <= set(r) for r in rejects)


def test_no_pii_in_any_output(example_run: Path) -> None:
    plan = planted()
    files = sorted(example_run.iterdir())
    assert {p.name for p in files} >= {"rejects.jsonl", "report.json", "report.html"}
    for path in files:
        text = path.read_text(encoding="utf-8")
        leaked = [s for s in plan["pii_strings"] if s in text]
        assert not leaked, f"{path.name} holds PII"
    kept = "".join((example_run / f"{name}.jsonl").read_text() for name in SPLITS)
    assert plan["luhn_invalid"] in kept  # 16 digits failing Luhn are not a card
    for placeholder in ("<EMAIL>", "<PHONE>", "<CREDIT_CARD>", "<IP_ADDRESS>", "<SECRET>"):
        assert placeholder in kept
    report = json.loads((example_run / "report.json").read_text())
    assert all(n > 0 for n in report["pii"]["replaced"].values())


def test_splits_are_stratified_and_leak_free(example_run: Path) -> None:
    report = json.loads((example_run / "report.json").read_text())
    assert sum(report["splits"].values()) == report["counts"]["kept"]
    for tag, counts in report["tags"].items():
        if counts["kept"] >= 10:
            assert counts["validation"] >= 1 and counts["test"] >= 1, tag
    assert report["leakage"]["checked"] and report["leakage"]["removed_test_overlap"] == 4


def test_report_html_has_the_plots(example_run: Path) -> None:
    html = (example_run / "report.html").read_text(encoding="utf-8")
    assert "<script" not in html and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )
    assert html.count("<svg") == 6  # rules, 3 token histograms, tags, PII
    for name in SPLITS:
        assert f'data-chart="tokens-{name}"' in html
    rules = re.search(r'<svg[^>]*data-chart="rules".*?</svg>', html, re.S)
    assert rules is not None
    bars = dict(
        re.findall(r'class="bar" data-label="([^"]+)" data-value="([^"]+)"', rules.group(0))
    )
    report = json.loads((example_run / "report.json").read_text())
    assert {k: int(v) for k, v in bars.items()} == report["removed_by_rule"]


def test_leakage_check_matters_without_dedup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = run_prep_cli(tmp_path, monkeypatch, "dedup.exact=false", "dedup.near=false")
    assert report["removed_by_rule"]["exact_duplicate"] == 0
    assert report["removed_by_rule"]["near_duplicate"] == 0
    assert report["leakage"]["duplicate_links"] >= len(planted()["duplicate_groups_by_line"])
    where = {r["line"]: name for name in SPLITS for r in read(tmp_path / f"{name}.jsonl")}
    for group in planted()["duplicate_groups_by_line"]:
        assert len({where[line] for line in group}) == 1, group


def test_bad_config_is_a_clear_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["prep", str(ROOT / RECIPE), "dedup.treshold=0.5", f"output_dir={tmp_path}"]) == 2
    assert "did you mean 'dedup.threshold'" in capsys.readouterr().err


# ---------------------------------------------------------------- headless browser render


def _png_pixels_vary(path: Path) -> bool:
    """Whether a PNG is more than one flat colour (PIL when installed, else raw IDAT bytes)."""
    try:
        from PIL import Image
    except ImportError:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        pos, idat = 8, b""
        while pos < len(data):
            (length,) = struct.unpack(">I", data[pos : pos + 4])
            if data[pos + 4 : pos + 8] == b"IDAT":
                idat += data[pos + 8 : pos + 8 + length]
            pos += 12 + length
        # Filtered scanlines of a one-colour image hold a handful of byte values; charts,
        # text and anti-aliasing give many.
        return len(set(zlib.decompress(idat))) > 32
    with Image.open(path) as image:
        return len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 3


def test_report_renders_in_headless_chromium(example_run: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    flags = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    url = (example_run / "report.html").resolve().as_uri()
    shot = tmp_path / "r.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1200,1600", url],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert shot.is_file() and shot.stat().st_size > 10_000
    assert _png_pixels_vary(shot)
    dom = subprocess.run(
        [*flags, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    assert dom.count("<svg") == 6 and dom.count('class="bar"') > 20
    assert 'data-label="near_duplicate"' in dom


def test_cap_for_an_unknown_tag_is_named(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(
        [
            "prep",
            RECIPE,
            f"output_dir={tmp_path / 'o'}",
            "progress=false",
            "balance.cap_per_tag={mathh: 3, code: 2}",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "balance.cap_per_tag.mathh" in err and "did you mean 'math'" in err
