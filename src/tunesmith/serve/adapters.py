"""Finding and vetting adapter directories: under the adapter root, LoRA, and of this base.

Runtime additions (``POST /v1/adapters``) may only name directories under the configured
adapter root: the path is resolved (symlinks followed) and must still lie inside the resolved
root, so ``../`` and symlinks pointing out are refused. The same holds for what is found inside
it: the ``final/`` of a run dir and every entry of the adapter dir (the files peft and the
tokenizer open) are resolved and must lie inside the root too.

Errors name paths relative to the root (the caller's own words), never absolute server paths,
and never quote a file's contents.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from tunesmith.models.load import ModelError, find_weights_dir, resolve_model
from tunesmith.models.safe_weights import TRUST_PICKLE_ENV, PickleWeightsError, check_weights_dir
from tunesmith.serve.errors import APIError, bad_request

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
BASE_ROW = "__base__"  # peft's name for "no adapter" in a mixed batch


def check_name(name: str, taken: set[str]) -> None:
    if not NAME.fullmatch(name) or name == BASE_ROW:
        raise bad_request(
            f"Invalid adapter name '{name}': use letters, digits and . _ : - (max 64)",
            param="name",
        )
    if name in taken:
        raise APIError(409, f"The model '{name}' is already served", param="name", code="exists")


def _outside(path: str) -> APIError:
    return APIError(
        403,
        f"Adapter path '{path}' resolves outside the adapter root",
        type="permission_error",
        param="path",
        code="path_outside_root",
    )


def _inside(real_root: Path, real: Path) -> bool:
    return real == real_root or real_root in real.parents


def under_root(root: Path, path: str) -> Path:
    """``path`` (relative to ``root``, or absolute) resolved; refused when it leaves ``root``."""
    if "\x00" in path:
        raise bad_request("The adapter path holds a NUL byte", param="path")
    real_root = root.resolve()
    candidate = Path(path).expanduser()
    real = (candidate if candidate.is_absolute() else real_root / candidate).resolve()
    if not _inside(real_root, real):
        raise _outside(path)
    return real


def shown(root: Path, path: Path) -> str:
    """``path`` (under the resolved root, links not followed) as an error may show it: relative
    to the root (``.`` for the root itself), else its last part only."""
    try:
        return str(path.relative_to(root.resolve()))
    except ValueError:
        return path.name


def check_inside(root: Path, weights: Path) -> None:
    """Refuse (403) an adapter dir that is, or holds an entry that is, a link out of ``root``.

    peft and the tokenizer open files of ``weights`` by name, so a weights file, a config or a
    ``final/`` symlinked elsewhere would be read from outside the root; each entry is resolved.
    """
    real_root = root.resolve()
    for entry in [weights, *weights.iterdir()]:
        if not _inside(real_root, entry.resolve()):
            raise _outside(shown(root, entry))


def _adapter_config(weights: Path, label: str) -> dict[str, Any]:
    try:
        info = json.loads((weights / "adapter_config.json").read_text())
    except (OSError, ValueError):  # the decoder's message would quote the file: not shown
        raise bad_request(f"{label}: adapter_config.json is not readable JSON", "path") from None
    if not isinstance(info, dict):
        raise bad_request(f"{label}: adapter_config.json is not a JSON object", param="path")
    return info


def adapter_dir(target: Path, label: str | None = None) -> Path:
    """The adapter weights of a run dir (``final/``) or of an adapter dir; errors name the
    adapter by ``label`` (default: ``target`` as given)."""
    label = label or str(target)
    try:
        weights = find_weights_dir(str(target))
    except ModelError:
        raise bad_request(
            f"{label}: neither a run directory (no final/) nor an adapter directory", "path"
        ) from None
    if weights is None:
        raise bad_request(f"{label}: no such directory", param="path")
    if not (weights / "adapter_config.json").is_file():
        raise bad_request(f"{label}: no adapter here (no adapter_config.json)", param="path")
    info = _adapter_config(weights, label)
    if info.get("peft_type") != "LORA" or info.get("use_dora"):
        kind = "DoRA" if info.get("use_dora") else "non-LoRA"
        raise bad_request(
            f"{label}: a {kind} adapter; the server batches LoRA adapters only "
            "(fold others into the base with 'tunesmith merge' and serve that)",
            param="path",
            code="unsupported_adapter",
        )
    try:
        check_weights_dir(weights, adapter=True)
    except PickleWeightsError:
        raise bad_request(
            "The adapter holds only pickle weights (adapter_model.bin), no safetensors; convert "
            f"it to safetensors, or start the server with {TRUST_PICKLE_ENV}=1 if you trust it",
            param="path",
            code="pickle_weights",
        ) from None
    return weights


def recorded_base(weights: Path, label: str | None = None) -> str | None:
    """The base an adapter was trained on: the training config beside it, else peft's record."""
    from tunesmith.engine.rundir import saved_setting

    label = label or str(weights)
    try:
        name = saved_setting(weights, "model.name_or_path")
    except Exception:  # a YAML error quotes the file's lines: never shown to the caller
        raise bad_request(
            f"{label}: its saved training config is not readable YAML", param="path"
        ) from None
    if name:
        return str(name)
    base = _adapter_config(weights, label).get("base_model_name_or_path")
    return str(base) if base else None


def _fingerprint(model_dir: Path) -> str:
    """config.json plus the names and sizes of the weight files: equal for copies of a model."""
    digest = hashlib.sha256((model_dir / "config.json").read_bytes())
    for f in sorted(model_dir.glob("*.safetensors")):
        digest.update(f"{f.name}:{f.stat().st_size}".encode())
    return digest.hexdigest()


def check_same_base(weights: Path, base_dir: Path, label: str | None = None) -> None:
    """Refuse an adapter trained on another base (a same-shaped other model would load silently).

    The messages name neither the recorded base (a file's contents) nor the served base's path.
    """
    label = label or str(weights)
    name = recorded_base(weights, label)
    if name is None:
        raise bad_request(f"{label}: the adapter records no base model", param="path")
    try:
        its_base = resolve_model(name)
    except (ModelError, OSError, ValueError):
        raise bad_request(
            f"{label}: its recorded base model cannot be found to compare with the served base",
            param="path",
            code="base_mismatch",
        ) from None
    if its_base.resolve() == base_dir.resolve() or _fingerprint(its_base) == _fingerprint(base_dir):
        return
    raise bad_request(
        f"{label}: trained on another base model than the one served",
        param="path",
        code="base_mismatch",
    )
