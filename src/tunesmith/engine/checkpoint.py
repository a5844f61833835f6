"""Atomic checkpoints with everything needed to continue the exact trajectory.

A checkpoint directory ``checkpoints/step-N/`` holds the model as ``save_pretrained`` writes it
(a peft adapter or a full transformers model, safetensors, loadable without tunesmith) and
``state.pt`` with the optimizer, scheduler, RNG states and the data position. It is written to a
temporary directory and renamed into place, so a crash never leaves a half-written checkpoint.
Our own non-tensor state is read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from tunesmith.models.safe_weights import check_weights_dir, pickle_weight_files

STEP_DIR = re.compile(r"^step-(\d+)$")


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def export_model(
    model: Any,
    out: Path,
    tokenizer: Any | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write the model (adapter or full) and optionally the tokenizer with plain save_pretrained;
    ``state_dict`` replaces the model's own tensors (weights gathered from FSDP shards)."""
    extra = {}
    if state_dict is not None:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        tied = getattr(base, "_tied_weights_keys", None) or {}
        if getattr(base.config, "tie_word_embeddings", False):
            # A tied output head is the embedding: saved once, as save_pretrained would.
            state_dict = {
                k: v for k, v in state_dict.items() if not any(k.endswith(t) for t in tied)
            }
        extra["state_dict"] = state_dict
    model.save_pretrained(str(out), safe_serialization=True, **extra)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))


def atomic_dir(final: Path) -> Path:
    """A fresh temporary directory beside ``final``; pass it to :func:`commit_dir` when done."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))


def commit_dir(tmp: Path, final: Path) -> None:
    """Move a finished temporary directory into place (replacing an older one)."""
    if final.exists():
        old = final.with_name(f".old-{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: Any,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    train_state: dict[str, Any],
    keep_last: int,
    rng: list[dict[str, Any]] | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
    staging: Path | None = None,
) -> Path:
    """Write ``checkpoints/step-N`` atomically; ``rng`` holds every rank's RNG state (default:
    this process's alone). ``optimizer`` None: its state is saved elsewhere (FSDP shards,
    already in ``staging``)."""
    final = run_dir / "checkpoints" / f"step-{step}"
    tmp = staging or atomic_dir(final)
    try:
        export_model(model, tmp, state_dict=state_dict)
        torch.save(
            {
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "scheduler": scheduler.state_dict(),
                "rng": rng if rng is not None else [rng_state()],
                "train": train_state,
            },
            tmp / "state.pt",
        )
        shutil.copy(run_dir / "config.yaml", tmp / "config.yaml")
        commit_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    prune_checkpoints(run_dir, keep_last)
    return final


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name))]
    return sorted(found)


def prune_checkpoints(run_dir: Path, keep_last: int) -> None:
    for _, path in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)


def load_trainable(model: Any, ckpt: Path) -> None:
    """Load the trained weights of a checkpoint back into ``model`` in place."""
    tensors: dict[str, torch.Tensor] = {}
    adapter = (ckpt / "adapter_config.json").is_file()
    # the weights alone, not the extra modules Run.checkpoint saves beside them (a value head)
    pattern = "adapter_model*.safetensors" if adapter else "model*.safetensors"
    files = sorted(ckpt.glob(pattern))
    if not files and check_weights_dir(ckpt, adapter=adapter):  # trusted pickle weights only
        for file in pickle_weight_files(ckpt, adapter=adapter):
            tensors.update(torch.load(file, map_location="cpu", weights_only=True))
    for file in files:
        tensors.update(load_file(str(file)))
    if adapter:
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model, tensors)
        # peft loads a prompt-learning adapter's "prompt_embeddings" into the prompt encoder
        # itself and still lists the key as unexpected.
        unexpected = [k for k in getattr(result, "unexpected_keys", []) if k != "prompt_embeddings"]
        if unexpected:
            raise RuntimeError(f"{ckpt}: adapter weights do not fit the model: {unexpected[:3]}")
        return
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    trainable_missing = [
        n for n, p in model.named_parameters() if p.requires_grad and n in set(missing)
    ]
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    trainable_missing = [n for n in trainable_missing if n not in tied]
    if unexpected or trainable_missing:
        raise RuntimeError(
            f"{ckpt}: weights do not fit the model "
            f"(unexpected {unexpected[:3]}, missing {trainable_missing[:3]})"
        )


def load_state(ckpt: Path) -> dict[str, Any]:
    return torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
