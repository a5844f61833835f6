"""The run directory: the unit every later command (eval, generate, merge, serve) consumes."""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from tunesmith.config import BaseRunConfig, dump_config


def new_run_dir(cfg: BaseRunConfig) -> Path:
    name = cfg.train.run_name or f"{cfg.method}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(cfg.train.output_dir) / name
    if cfg.train.resume:
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(
                f"train.resume=true but {run_dir} holds no run to resume "
                "(set train.run_name to the run's name)"
            )
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(
            f"{run_dir} already exists; choose another train.run_name, or "
            "pass train.resume=true to continue it"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _hash_inputs(paths: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in paths:
        path = Path(p)
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
        for f in files:
            out[str(f)] = file_sha256(f)
    return out


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def write_run_files(
    run_dir: Path, cfg: BaseRunConfig, data_files: list[str], extra: dict[str, Any]
) -> None:
    """``config.yaml`` (resolved) and ``env.json`` (versions, hardware, seed, data hashes)."""
    (run_dir / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
    env = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {
            p: _version(p)
            for p in ("tunesmith", "torch", "transformers", "peft", "datasets", "safetensors")
        },
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
        "seed": cfg.train.seed,
        "data_sha256": _hash_inputs(data_files),
        **extra,
    }
    (run_dir / "env.json").write_text(json.dumps(env, indent=2), encoding="utf-8")
