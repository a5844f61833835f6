"""Every number the README and docs/ quote has a file or a command behind it.

Two checks over ``README.md`` and ``docs/*.md``:

1. Every results file they cite (``benchmarks/results/NAME.json``, brace lists such as
   ``compare_trl_dpo_{fp32,bf16}.json`` expanded) and every script, test or recipe path they name
   (``benchmarks/``, ``scripts/``, ``tests/``, ``configs/``, ``suites/``) exists.
2. Every Markdown table holding a number sits in a section (the text between two headings) that
   names an existing results file or a command in the repo that writes the numbers
   (``python benchmarks/X.py``, ``make TARGET``, ``pytest tests/...``), unless it is one of the
   tables listed in ``NOT_MEASUREMENTS``: settings, defaults, formulas and capabilities, each with
   the reason it quotes no measurement.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Tables that hold digits but no measurement: (doc, the table's header row) -> why.
NOT_MEASUREMENTS: dict[tuple[str, str], str] = {
    (
        "README.md",
        "| method | checkpoints + exact resume after SIGKILL | torchrun | pre-flight (`train` and "
        "`doctor`) | early stopping + `best/` |",
    ): "capabilities, each cell naming the test behind it; its digits are '2 nodes'",
    (
        "README.md",
        "| torch | transformers | peft | trl | accelerate | datasets | tokenizers | safetensors "
        "| bitsandbytes |",
    ): "pinned versions, written by `make lock` from requirements/lock.txt",
    ("docs/plan.md", "| component   | bytes |"): "the estimate's formulas (bytes per parameter)",
    ("docs/dpo.md", "| loss | per pair | conventions |"): "loss equations and the TRL version",
    ("docs/serving.md", "| Case | Status | `code` |"): "HTTP status codes and default limits",
    ("docs/serving.md", "| Method and path | What it does |"): "endpoints and status codes",
    ("docs/export.md", "| method | what it does | ranks |"): "merge methods; digits: papers' years",
}

RESULTS_REF = re.compile(r"benchmarks/results/[A-Za-z0-9_.{},-]+\.json")
PATH_REF = re.compile(
    r"(?<![\w/.])(?:benchmarks|scripts|tests|configs|suites)/(?:[A-Za-z0-9_./-]|\{[^}]*\})*"
)
COMMAND_REF = re.compile(
    r"python3? (?:-m )?benchmarks[/.](?P<bench>\w+)"
    r"|make (?P<make>[a-z][\w-]*)"
    r"|pytest [^`\n]*?(?P<test>tests/[\w/]+\.py)"
)
HEADING = re.compile(r"^#{1,6} ")
# A number as text: not part of an identifier (``f1``, ``FSDP2``) and not inside inline code.
NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*(?![\w])")
CODE_SPAN = re.compile(r"`[^`]*`")


@dataclass(frozen=True)
class Table:
    """A Markdown table: the doc it sits in, its header row, its rows and its section's text."""

    doc: str
    header: str
    rows: tuple[str, ...]
    section: str


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _expand(ref: str) -> list[str]:
    """``a_{x,y}.json`` -> ``[a_x.json, a_y.json]``; a path without braces is itself."""
    parts = re.split(r"\{([^}]*)\}", ref)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def _normalise_header(line: str) -> str:
    return " | ".join(c.strip() for c in line.strip().split("|")).strip()


def _sections(text: str) -> list[list[str]]:
    """The doc's lines, split at every heading outside fenced code blocks."""
    sections: list[list[str]] = [[]]
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced and HEADING.match(line):
            sections.append([])
        sections[-1].append(line)
    return sections


def _tables(path: Path) -> list[Table]:
    """Every Markdown table in the doc (a ``|`` header row followed by a ``|---`` rule)."""
    found = []
    for lines in _sections(path.read_text(encoding="utf-8")):
        stripped = [line.strip() for line in lines]
        section = "\n".join(lines)
        for i, line in enumerate(stripped[:-1]):
            if not (line.startswith("|") and re.match(r"^\|[\s:|-]+\|$", stripped[i + 1])):
                continue
            rows = list(itertools.takewhile(lambda s: s.startswith("|"), stripped[i + 2 :]))
            found.append(Table(_rel(path), line, tuple(rows), section))
    return found


def _has_number(table: Table) -> bool:
    return any(NUMBER.search(CODE_SPAN.sub("", row)) for row in table.rows)


def _makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([a-z][\w-]*):", text, flags=re.MULTILINE))


def _sources(section: str) -> list[str]:
    """The existing results files and the real commands a section names."""
    found = [
        r for ref in RESULTS_REF.findall(section) for r in _expand(ref) if (ROOT / r).is_file()
    ]
    targets = _makefile_targets()
    for m in COMMAND_REF.finditer(section):
        bench, make, test = m.group("bench"), m.group("make"), m.group("test")
        if (
            (bench and (ROOT / "benchmarks" / f"{bench}.py").is_file())
            or (make and make in targets)
            or (test and (ROOT / test).is_file())
        ):
            found.append(m.group(0))
    return found


def _exempt(table: Table) -> bool:
    header = _normalise_header(table.header)
    return any(doc == table.doc and _normalise_header(h) == header for doc, h in NOT_MEASUREMENTS)


ALL_TABLES = [t for doc in DOCS for t in _tables(doc)]


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_every_cited_results_file_exists(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    cited = [r for ref in RESULTS_REF.findall(text) for r in _expand(ref)]
    missing = [r for r in cited if not (ROOT / r).is_file()]
    assert not missing, f"{_rel(doc)} cites results files that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_every_named_script_test_and_recipe_exists(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    named = {p.rstrip(".,") for ref in PATH_REF.findall(text) for p in _expand(ref)}
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"{_rel(doc)} names paths that do not exist: {missing}"


def test_every_table_of_numbers_names_its_source() -> None:
    unbacked = [
        f"{t.doc}: {t.header}"
        for t in ALL_TABLES
        if _has_number(t) and not _exempt(t) and not _sources(t.section)
    ]
    assert not unbacked, (
        "tables of numbers in a section naming no results file under benchmarks/results/ and no "
        "command that writes one (or add the table to NOT_MEASUREMENTS with its reason):\n"
        + "\n".join(unbacked)
    )


def test_every_exception_is_a_table_of_numbers_that_exists() -> None:
    """A stale exception would let a later measurement table through under an old header."""
    numbered = {(t.doc, _normalise_header(t.header)) for t in ALL_TABLES if _has_number(t)}
    stale = [key for key in NOT_MEASUREMENTS if (key[0], _normalise_header(key[1])) not in numbered]
    assert not stale, f"NOT_MEASUREMENTS names tables that are gone or hold no number: {stale}"


def test_the_checks_see_the_tables_they_guard() -> None:
    """The scanner itself: it finds the README's results tables and their sources."""
    readme = [t for t in ALL_TABLES if t.doc == "README.md"]
    sft = next(t for t in readme if t.header.startswith("| Run | Precision |"))
    assert _has_number(sft)
    assert "benchmarks/results/compare_trl_sft.json" in _sources(sft.section)
    assert _expand("benchmarks/results/a_{x,y}.json") == [
        "benchmarks/results/a_x.json",
        "benchmarks/results/a_y.json",
    ]
    assert not _has_number(Table("x", "| a |", ("| `f1` and FSDP2 | `128` |",), ""))
    assert _has_number(Table("x", "| a |", ("| accuracy | 0.91 |",), ""))
