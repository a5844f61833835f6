"""Only safetensors weights load by default; pickle-based weights need an explicit opt-in.

A ``.bin`` / ``.pt`` / ``.pth`` file is a Python pickle: loading one can run code written into
it. transformers and peft read them with ``torch.load(weights_only=True)``, whose restricted
unpickler has itself been bypassed before (CVE-2025-32434, torch < 2.6), so a directory that
holds only such files is refused, naming the directory and the opt-in: the
``TUNESMITH_TRUST_PICKLE=1`` environment variable, or ``model.trust_pickle: true`` in a config.
A directory with safetensors weights is loaded from them alone (``use_safetensors=True``).
"""

from __future__ import annotations

import os
from pathlib import Path

from tunesmith.errors import UserError

TRUST_PICKLE_ENV = "TUNESMITH_TRUST_PICKLE"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# Files that sit beside weights and are never weights (training_args.bin is written by HF's
# Trainer; tunesmith's own state.pt is loaded with weights_only=True).
NOT_WEIGHTS = frozenset(
    {"training_args.bin", "state.pt", "optimizer.pt", "scheduler.pt", "rng_state.pth"}
)


class PickleWeightsError(UserError):
    """A model, adapter or checkpoint directory holds only pickle weights and none is trusted."""


def pickle_trusted(trust_pickle: bool = False) -> bool:
    """Whether pickle weights may load: the config's ``model.trust_pickle`` or the env var."""
    return trust_pickle or os.environ.get(TRUST_PICKLE_ENV, "").strip().lower() in {
        "1",
        "true",
        "yes",
    }


def pickle_weight_files(directory: Path, *, adapter: bool = False) -> list[Path]:
    """The pickle weight files of ``directory`` (an adapter's: ``adapter_model.*`` only)."""
    if not directory.is_dir():
        return []
    found = [
        f
        for f in directory.iterdir()
        if f.is_file() and f.suffix in PICKLE_SUFFIXES and f.name not in NOT_WEIGHTS
    ]
    if adapter:
        found = [f for f in found if f.name.startswith("adapter_model")]
    return sorted(found)


def has_safetensors(directory: Path, *, adapter: bool = False) -> bool:
    """Whether ``directory`` holds safetensors weights (an adapter's: ``adapter_model*``)."""
    pattern = "adapter_model*.safetensors" if adapter else "*.safetensors"
    return directory.is_dir() and any(directory.glob(pattern))


def check_weights_dir(
    directory: Path | str, *, adapter: bool = False, trust_pickle: bool = False
) -> bool:
    """Refuse ``directory`` when it holds only pickle weights and pickle is not trusted.

    Returns whether pickle weights will be read (only pickle, and trusted): the value to pass
    as ``from_pretrained(use_safetensors=not ...)`` is then ``None`` (transformers' own choice);
    otherwise ``True``. A directory with no weights at all passes: the loader reports that.
    """
    path = Path(directory)
    if has_safetensors(path, adapter=adapter):
        return False
    pickles = pickle_weight_files(path, adapter=adapter)
    if not pickles:
        return False
    if pickle_trusted(trust_pickle):
        return True
    what = "adapter" if adapter else "model"
    names = ", ".join(f.name for f in pickles[:3])
    raise PickleWeightsError(
        f"{path}: this {what} directory holds only pickle weights ({names}), no safetensors; "
        "loading pickle can run arbitrary code, so it is refused. Convert it to safetensors "
        "(load it once where you trust it and save_pretrained), or, if you trust where it came "
        f"from, set {TRUST_PICKLE_ENV}=1 (or model.trust_pickle: true in the config)"
    )


def use_safetensors(
    directory: Path | str, *, adapter: bool = False, trust_pickle: bool = False
) -> bool | None:
    """The ``use_safetensors`` argument for ``from_pretrained`` of ``directory`` (see
    :func:`check_weights_dir`): True, or None when trusted pickle weights are all it holds."""
    if check_weights_dir(directory, adapter=adapter, trust_pickle=trust_pickle):
        return None
    return True
