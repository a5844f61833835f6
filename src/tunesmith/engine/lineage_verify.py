"""Reading lineage: the chain from raw data to an artefact, and re-hashing what it was made from.

:func:`chain` flattens an artefact's embedded parents into the order they were made (raw data
-> prep -> train -> final -> merge -> export); :func:`verify` re-hashes every recorded input (and
every artefact's own files) that still exists and names each one that changed or is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.engine.lineage import LineageError, read_lineage, sha256_file


def load_node(path: str | Path) -> dict[str, Any]:
    """The lineage node of ``path``, or a :class:`LineageError` saying none was recorded."""
    node = read_lineage(path)
    if node is None:
        raise LineageError(
            f"{path}: no lineage.json (artefacts written by tunesmith prep, train, merge and "
            "export record one; this one predates lineage or was not made by tunesmith)"
        )
    return node


def chain(node: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node behind ``node`` and ``node`` itself, parents before children, each once."""
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()

    def visit(n: dict[str, Any]) -> None:
        key = (str(n.get("kind")), str(n.get("path")))
        if key in seen:
            return
        seen.add(key)
        for parent in n.get("parents", []):
            visit(parent)
        out.append(n)

    visit(node)
    return out


def _short(digest: str | None) -> str:
    return (digest or "?")[:12]


def _code(node: dict[str, Any]) -> str:
    code = node.get("code") or {}
    text = f"tunesmith {code.get('tunesmith', '?')}"
    if code.get("git_commit"):
        text += f" @ {code['git_commit'][:10]}{' (modified)' if code.get('git_dirty') else ''}"
    return text


def _describe_inputs(inputs: list[dict[str, Any]], limit: int = 6) -> list[str]:
    """One line per input file, directories of many files (model weights) summarised."""
    lines: list[str] = []
    by_role: dict[str, list[dict[str, Any]]] = {}
    for item in inputs:
        by_role.setdefault(item["role"], []).append(item)
    for role, items in by_role.items():
        if len(items) > limit:
            root = Path(items[0]["path"]).parent
            size = sum(int(i.get("size", 0)) for i in items)
            lines.append(f"    {role}: {len(items)} files under {root} ({size:,} bytes)")
            continue
        lines += [f"    {role}: {i['path']}  sha256 {_short(i['sha256'])}" for i in items]
    return lines


def format_chain(node: dict[str, Any]) -> str:
    """The chain as text: one block per artefact, oldest first, joined by arrows."""
    blocks = []
    for n in chain(node):
        head = f"{n.get('kind')}  {n.get('path')}  ({n.get('created', '?')}, {_code(n)}"
        if n.get("config_sha256"):
            head += f", config {_short(n['config_sha256'])}"
        lines = [head + ")", *_describe_inputs(n.get("inputs", []))]
        outputs = n.get("outputs", [])
        if outputs:
            lines.append(f"    outputs: {len(outputs)} file(s)")
        blocks.append("\n".join(lines))
    return "\n  ↓\n".join(blocks)


@dataclass
class Finding:
    """One recorded file that no longer matches: ``status`` is ``changed`` or ``missing``."""

    status: str
    kind: str
    role: str
    path: str
    recorded: str
    now: str | None = None

    def __str__(self) -> str:
        where = f"{self.kind} {self.role}"
        if self.status == "missing":
            return f"MISSING  {self.path}  ({where}; recorded sha256 {_short(self.recorded)})"
        return (
            f"CHANGED  {self.path}  ({where}; sha256 {_short(self.recorded)} -> {_short(self.now)})"
        )


def _check(path: Path, recorded: str, kind: str, role: str, cache: dict[Path, str]) -> Finding:
    if not path.is_file():
        return Finding("missing", kind, role, str(path), recorded)
    if path not in cache:
        cache[path] = sha256_file(path)
    status = "ok" if cache[path] == recorded else "changed"
    return Finding(status, kind, role, str(path), recorded, cache[path])


def verify(node: dict[str, Any]) -> tuple[int, list[Finding]]:
    """Re-hash every input of every node in the chain, and each artefact's own files where the
    artefact is still at its recorded path. Returns (files checked, the ones that differ)."""
    cache: dict[Path, str] = {}
    results: dict[str, Finding] = {}  # one finding per file (prep's output is train's input)
    for n in chain(node):
        kind = str(n.get("kind"))
        files = [(Path(i["path"]), i["sha256"], i["role"]) for i in n.get("inputs", [])]
        root = Path(str(n.get("path")))
        if root.is_dir():  # an artefact that was moved or deleted has nothing to compare
            files += [(root / o["path"], o["sha256"], "output") for o in n.get("outputs", [])]
        for path, recorded, role in files:
            if str(path) not in results:
                results[str(path)] = _check(path, recorded, kind, role, cache)
    return len(results), [r for r in results.values() if r.status != "ok"]
