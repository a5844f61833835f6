"""Shared pieces of merge, average and export: the error type, locating a run's weights and
its base model, and writing an output directory only after it has been verified."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from tunesmith.engine.checkpoint import atomic_dir, commit_dir
from tunesmith.engine.rundir import is_run_dir
from tunesmith.models.load import ModelError, _adapter_base, find_weights_dir, resolve_model

ADAPTER_CONFIG = "adapter_config.json"


class MergeError(ValueError):
    """A merge, average or export cannot be done, or its output failed verification."""


def weights_dir(target: str | Path) -> Path:
    """The weights a run (its ``final/``), an adapter dir or a model dir holds."""
    found = find_weights_dir(str(target))
    if found is None:
        raise MergeError(f"{target}: no such run, adapter or model directory")
    return found


def run_dir_of(target: str | Path) -> Path | None:
    """The run directory behind ``target`` (a run dir or its final/best/checkpoint), if any."""
    path = Path(target).expanduser()
    for candidate in (path, path.parent, path.parent.parent):
        if is_run_dir(candidate):
            return candidate
    return None


def is_adapter(weights: Path) -> bool:
    return (weights / ADAPTER_CONFIG).is_file()


def base_model_path(adapter_dir: Path) -> Path:
    """The local directory of an adapter's base model; a clear error when it is missing."""
    name = _adapter_base(adapter_dir)
    try:
        return resolve_model(name)
    except ModelError as err:
        raise MergeError(
            f"{adapter_dir}: its base model is missing: {name} ({err}); "
            "restore it at that path or give the run's config a reachable model.name_or_path"
        ) from err


def fp32_device(device: str) -> torch.device:
    """Verification runs in float32; ``auto`` picks CUDA when present."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def report_path(out: Path) -> Path:
    """Where the verification report of ``out`` goes: beside it, so it survives a failure."""
    return out.with_name(f"{out.name}.verify.json")


def write_report(out: Path, report: dict[str, Any]) -> Path:
    path = report_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def staged(out: Path) -> Path:
    """A temporary directory beside ``out``; ``out`` itself is only ever a verified result."""
    return atomic_dir(out)


def publish(tmp: Path, out: Path, report: dict[str, Any]) -> None:
    """Commit ``tmp`` to ``out`` when the report says ok; otherwise remove it and fail."""
    write_report(out, report)
    if not report["ok"]:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MergeError(
            f"verification failed for {out}: {report['reason']} "
            f"(report: {report_path(out)}; nothing was written to {out})"
        )
    commit_dir(tmp, out)
