"""The run directory: the unit every later command (eval, generate, merge, serve) consumes."""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
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
    if (run_dir / "FAILED").is_file() and not (run_dir / "config.yaml").exists():
        shutil.rmtree(run_dir)  # a start refused for its data (Run.preparing): start again
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


RECORDED_PACKAGES = (
    "tunesmith",
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "datasets",
    "tokenizers",
    "safetensors",
    "huggingface-hub",
    "bitsandbytes",
    "trl",
)
"""The versions ``env.json`` records (None where one is not installed); requirements/lock.txt
pins the tested set."""


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def package_versions() -> dict[str, str | None]:
    """The installed version of each of :data:`RECORDED_PACKAGES` (None where absent)."""
    return {p: _version(p) for p in RECORDED_PACKAGES}


def write_run_files(
    run_dir: Path, cfg: BaseRunConfig, data_files: list[str], extra: dict[str, Any]
) -> None:
    """``config.yaml`` (resolved) and ``env.json`` (versions, hardware, seed, data hashes)."""
    (run_dir / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
    env = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
        "seed": cfg.train.seed,
        "data_sha256": _hash_inputs(data_files),
        **extra,
    }
    (run_dir / "env.json").write_text(json.dumps(env, indent=2), encoding="utf-8")


# ----------------------------------------------------------------------------- reading run dirs
# The one reader of a run's saved config, for everything that consumes run directories (eval,
# serve, merge, score, plan, classify's loader): a run dir holds ``config.yaml``; an exported
# ``final/`` / ``best/`` holds it as ``tunesmith_config.yaml``; a checkpoint as ``config.yaml``.

SAVED_CONFIG_NAMES = ("tunesmith_config.yaml", "config.yaml")


def is_run_dir(path: Path) -> bool:
    """A training run's directory: its resolved config and its metrics log."""
    return (path / "config.yaml").is_file() and (path / "metrics.jsonl").exists()


def saved_config(path: str | Path) -> dict[str, Any] | None:
    """The resolved training config recorded in ``path`` (run dir, export or checkpoint), or None
    when ``path`` holds none (a plain Hugging Face model directory has a ``config.json`` only)."""
    import yaml

    for name in SAVED_CONFIG_NAMES:
        file = Path(path) / name
        if file.is_file():
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
    return None


def saved_setting(path: str | Path, dotted: str, default: Any = None) -> Any:
    """One value of :func:`saved_config` by dotted key (``model.name_or_path``), else default."""
    node: Any = saved_config(path)
    for part in dotted.split("."):
        if not isinstance(node, dict) or node.get(part) is None:
            return default
        node = node[part]
    return node
