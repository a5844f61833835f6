"""Finding and vetting adapter directories: under the adapter root, LoRA, and of this base.

Runtime additions (``POST /v1/adapters``) may only name directories under the configured
adapter root: the path is resolved (symlinks followed) and must still lie inside the resolved
root, so ``../`` and symlinks pointing out are refused.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from tunesmith.models.load import ModelError, find_weights_dir, resolve_model
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


def under_root(root: Path, path: str) -> Path:
    """``path`` (relative to ``root``, or absolute) resolved; refused when it leaves ``root``."""
    real_root = root.resolve()
    candidate = Path(path).expanduser()
    real = (candidate if candidate.is_absolute() else real_root / candidate).resolve()
    if real != real_root and real_root not in real.parents:
        raise APIError(
            403,
            f"Adapter path '{path}' resolves outside the adapter root",
            type="permission_error",
            param="path",
            code="path_outside_root",
        )
    return real


def adapter_dir(target: Path) -> Path:
    """The adapter weights of a run dir (``final/``) or of an adapter dir."""
    try:
        weights = find_weights_dir(str(target))
    except ModelError as e:
        raise bad_request(str(e), param="path") from None
    if weights is None or not (weights / "adapter_config.json").is_file():
        raise bad_request(f"{target}: no adapter here (no adapter_config.json)", param="path")
    info = json.loads((weights / "adapter_config.json").read_text())
    if info.get("peft_type") != "LORA" or info.get("use_dora"):
        kind = "DoRA" if info.get("use_dora") else info.get("peft_type")
        raise bad_request(
            f"{weights}: a {kind} adapter; the server batches LoRA adapters only "
            "(fold others into the base with 'tunesmith merge' and serve that)",
            param="path",
            code="unsupported_adapter",
        )
    return weights


def recorded_base(weights: Path) -> str | None:
    """The base an adapter was trained on: the training config beside it, else peft's record."""
    from tunesmith.engine.rundir import saved_setting

    name = saved_setting(weights, "model.name_or_path")
    if name:
        return str(name)
    info = json.loads((weights / "adapter_config.json").read_text())
    return info.get("base_model_name_or_path") or None


def _fingerprint(model_dir: Path) -> str:
    """config.json plus the names and sizes of the weight files: equal for copies of a model."""
    digest = hashlib.sha256((model_dir / "config.json").read_bytes())
    for f in sorted(model_dir.glob("*.safetensors")):
        digest.update(f"{f.name}:{f.stat().st_size}".encode())
    return digest.hexdigest()


def check_same_base(weights: Path, base_dir: Path) -> None:
    """Refuse an adapter trained on another base (a same-shaped other model would load silently)."""
    name = recorded_base(weights)
    if name is None:
        raise bad_request(f"{weights}: the adapter records no base model", param="path")
    try:
        its_base = resolve_model(name)
    except ModelError:
        raise bad_request(
            f"{weights}: its base '{name}' cannot be found to compare with the served base",
            param="path",
            code="base_mismatch",
        ) from None
    if its_base.resolve() == base_dir.resolve() or _fingerprint(its_base) == _fingerprint(base_dir):
        return
    raise bad_request(
        f"{weights}: trained on '{name}', not on the served base {base_dir}",
        param="path",
        code="base_mismatch",
    )
