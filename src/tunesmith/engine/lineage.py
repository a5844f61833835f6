"""Lineage: what every artefact was made from, by content hash, and a check that it still is.

Every artefact directory (a ``prep`` output, a training run, its ``final/`` / ``best/``, a merged
or exported model) holds ``lineage.json``, one *node*::

    {"kind": "train", "path": "runs/x", "created": "...", "code": {"tunesmith": "0.1.0",
     "git_commit": "...", "git_dirty": false}, "config_sha256": "...",
     "inputs":  [{"role": "data", "path": "prepared/train.jsonl", "sha256": "...", "size": 123}],
     "outputs": [{"path": "adapter_model.safetensors", "sha256": "...", "size": 456}],
     "parents": [<the lineage.json node of each parent, embedded whole>]}

Parents are embedded, not referenced, so an artefact copied elsewhere still carries its whole
chain (raw data -> prep -> train -> final -> merge -> export). Input paths are as they were when
recorded; output paths are relative to the artefact. Recording happens in the shared lifecycle
(:meth:`tunesmith.engine.run.Run.announce` / :meth:`~tunesmith.engine.run.Run.export`), in
``prep`` and in ``merge``/``export``, so a new method gets it by using the lifecycle.

Model weights are hashed once per (path, size, mtime) and cached in
``$TUNESMITH_CACHE/file-hashes.json``; ``verify`` re-hashes without the cache.

This module imports no torch: ``prep`` and ``tunesmith lineage`` use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError

LINEAGE_FILE = "lineage.json"
HASH_CACHE_FILE = "file-hashes.json"
CACHE_MIN_BYTES = 8 << 20  # smaller files hash in milliseconds: not worth a cache entry


class LineageError(UserError):
    """A path with no lineage record, or an unreadable one."""


# ----------------------------------------------------------------------------- hashing


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cache_path() -> Path:
    root = Path(os.environ.get("TUNESMITH_CACHE", Path.home() / ".cache" / "tunesmith"))
    return root / HASH_CACHE_FILE


def cached_sha256(path: Path) -> str:
    """:func:`sha256_file`, remembered by (absolute path, size, mtime): re-hashing a base model's
    weights on every run would cost seconds per GB; a changed file has a new size or mtime."""
    stat = path.stat()
    if stat.st_size < CACHE_MIN_BYTES:
        return sha256_file(path)
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    store = _cache_path()
    try:
        known = json.loads(store.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if key in known:
        return str(known[key])
    digest = sha256_file(path)
    # Forget this file's older versions and files that are gone: the cache stays small.
    mine = f"{path.resolve()}|"
    known = {
        k: v
        for k, v in known.items()
        if not k.startswith(mine) and Path(k.rsplit("|", 2)[0]).exists()
    }
    known[key] = digest
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_name(f"{store.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known), encoding="utf-8")
        os.replace(tmp, store)  # atomic: concurrent runs never read half a cache
    except OSError:
        pass  # a read-only cache only costs time
    return digest


def _files(path: Path) -> list[Path]:
    """A file, or every file under a directory (the lineage record itself excluded)."""
    if path.is_dir():
        return sorted(f for f in path.rglob("*") if f.is_file() and f.name != LINEAGE_FILE)
    return [path]


def hash_inputs(paths: Iterable[str | Path], role: str, use_cache: bool = False) -> list[dict]:
    """One input entry per file of ``paths`` (directories expanded)."""
    out: list[dict[str, Any]] = []
    for p in paths:
        for f in _files(Path(p)):
            digest = cached_sha256(f) if use_cache else sha256_file(f)
            out.append({"role": role, "path": str(f), "sha256": digest, "size": f.stat().st_size})
    return out


def hash_outputs(root: Path) -> list[dict[str, Any]]:
    """Every file under ``root``, by path relative to it."""
    return [
        {"path": str(f.relative_to(root)), "sha256": sha256_file(f), "size": f.stat().st_size}
        for f in _files(root)
    ]


def config_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------- the code


@cache
def code_version() -> dict[str, Any]:
    """tunesmith's version and, when it runs from a git checkout, the commit (and whether the
    package's sources differ from it)."""
    import tunesmith

    out: dict[str, Any] = {"tunesmith": tunesmith.__version__}
    root = Path(tunesmith.__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return out
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        out["git_commit"] = head.stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "diff", "--quiet", "HEAD", "--", "src"],
            capture_output=True, timeout=10,
        )  # fmt: skip
        out["git_dirty"] = dirty.returncode != 0
    except (OSError, subprocess.SubprocessError):
        pass
    return out


# ----------------------------------------------------------------------------- records


def find_lineage(path: str | Path) -> Path | None:
    """The lineage file of ``path``: itself, ``path/lineage.json`` or, for a run dir without
    one, its ``final/``."""
    p = Path(path)
    if p.is_file() and p.name == LINEAGE_FILE:
        return p
    for candidate in (p / LINEAGE_FILE, p / "final" / LINEAGE_FILE):
        if candidate.is_file():
            return candidate
    return None


def read_lineage(path: str | Path) -> dict[str, Any] | None:
    """The node recorded for ``path`` (None where there is none)."""
    file = find_lineage(path)
    if file is None:
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as err:
        raise LineageError(f"{file}: not valid JSON ({err})") from None
    return data if isinstance(data, dict) else None


def write_node(
    directory: Path,
    kind: str,
    *,
    path: Path | None = None,
    inputs: list[dict[str, Any]] | None = None,
    outputs: list[dict[str, Any]] | None = None,
    parents: list[dict[str, Any]] | None = None,
    config_text: str | None = None,
) -> dict[str, Any]:
    """Write ``directory/lineage.json`` (``path``: where the artefact will live, when
    ``directory`` is a staging copy renamed into place later)."""
    node: dict[str, Any] = {
        "kind": kind,
        "path": str(path or directory),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "code": code_version(),
        "config_sha256": config_sha256(config_text) if config_text is not None else None,
        "inputs": inputs or [],
        "outputs": outputs or [],
        "parents": _unique(parents or []),
    }
    (directory / LINEAGE_FILE).write_text(json.dumps(node, indent=1) + "\n", encoding="utf-8")
    return node


def _unique(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[tuple[str, str]] = set()
    out = []
    for n in nodes:
        key = (str(n.get("kind")), str(n.get("path")))
        if key not in seen:
            seen.add(key)
            out.append(n)
    return out


def data_parents(inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``prep`` nodes that wrote these data files, byte for byte (a file edited after prep
    is not linked to it)."""
    parents = []
    for item in inputs:
        file = Path(item["path"])
        node = read_lineage(file.parent) if (file.parent / LINEAGE_FILE).is_file() else None
        if node is None or node.get("kind") != "prep":
            continue
        made = {o["path"]: o["sha256"] for o in node.get("outputs", [])}
        if made.get(file.name) == item["sha256"]:
            parents.append(node)
    return parents


def model_inputs(
    model_dir: str | Path | None, role: str = "base_model"
) -> tuple[list[dict], list[dict]]:
    """A model's files by hash (cached) and, when it is itself a tunesmith artefact (a run's
    ``final/``, a merge), that artefact's node as a parent. A run dir stands for its
    ``final/`` (hashing the whole run dir would hash its checkpoints)."""
    if model_dir is None or not Path(model_dir).exists():
        return [], []
    if (Path(model_dir) / "final").is_dir():
        model_dir = Path(model_dir) / "final"
    inputs = hash_inputs([model_dir], role, use_cache=True)
    node = read_lineage(model_dir) if (Path(model_dir) / LINEAGE_FILE).is_file() else None
    return inputs, [node] if node else []


# ----------------------------------------------------------------------------- recorders


def record_run(
    run_dir: Path,
    config_text: str,
    data_files: list[str],
    base_model: Any,
    other_models: dict[str, Any] | None = None,
) -> None:
    """A training run's node: its data (hashes already in ``env.json`` are reused), the base
    model's weights, the prep runs and parent artefacts behind them, and the config hash.
    ``other_models`` maps a role (``teacher``) to another model the run learns from: its files
    are inputs under that role and its node, when it has one, a parent."""
    known: dict[str, str] = {}
    env = run_dir / "env.json"
    if env.is_file():
        known = dict(json.loads(env.read_text(encoding="utf-8")).get("data_sha256") or {})
    data = []
    for p in data_files:
        for f in _files(Path(p)):
            digest = known.get(str(f)) or sha256_file(f)
            data.append(
                {"role": "data", "path": str(f), "sha256": digest, "size": f.stat().st_size}
            )
    model, model_parent = model_inputs(base_model)
    for role, path in (other_models or {}).items():
        more, more_parent = model_inputs(path, role)
        model, model_parent = model + more, model_parent + more_parent
    write_node(
        run_dir,
        "train",
        inputs=data + model,
        parents=data_parents(data) + model_parent,
        config_text=config_text,
    )


def record_export(staging: Path, out: Path, source: Path, kind: str | None = None) -> None:
    """The node of a directory written from ``source`` (a run dir: ``final/``, ``best/``): its
    own files by hash, with the source's node as parent."""
    parent = read_lineage(source) if (source / LINEAGE_FILE).is_file() else None
    write_node(
        staging,
        kind or out.name,
        path=out,
        outputs=hash_outputs(staging),
        parents=[parent] if parent else [],
    )


def record_prep(out: Path, inputs: list[str], outputs: list[str], config_text: str) -> None:
    """``prep``'s manifest: the raw files read and the hashes of the split files written."""
    made = [o for o in hash_outputs(out) if o["path"] in outputs]
    write_node(
        out,
        "prep",
        inputs=hash_inputs(inputs, "raw_data"),
        outputs=made,
        config_text=config_text,
    )


def record_merge(
    staging: Path,
    out: Path,
    kind: str,
    sources: dict[str, list[str | Path]],
    run: Path | None = None,
) -> None:
    """A merged / exported / averaged model: ``sources`` maps a role (``adapter``,
    ``base_model``, ``model``, ``checkpoint``) to the directories read; each one's own node
    (and ``run``'s, for checkpoints) becomes a parent."""
    inputs: list[dict[str, Any]] = []
    parents: list[dict[str, Any]] = []
    if run is not None and (node := read_lineage(run)) is not None:
        parents.append(node)
    for role, dirs in sources.items():
        for d in dirs:
            inputs += hash_inputs([d], role, use_cache=role in ("base_model", "model"))
            node = read_lineage(d) if (Path(d) / LINEAGE_FILE).is_file() else None
            parents += [node] if node else []
    write_node(
        staging, kind, path=out, inputs=inputs, outputs=hash_outputs(staging), parents=parents
    )
