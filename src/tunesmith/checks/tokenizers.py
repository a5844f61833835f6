"""Whether two models share a tokenizer: distillation compares next-token distributions id by
id, so its teacher and student must turn the same text into the same ids. Used by
``methods/distill.py`` before training and by ``tunesmith doctor``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith.checks.checks import Check
from tunesmith.models.load import find_weights_dir, load_tokenizer, resolve_model


def tokenizer_dir(target: str) -> Path:
    """Where ``target``'s tokenizer lives: a run dir's ``final/``, a model or adapter dir, or
    the resolved alias / GGUF conversion."""
    weights = find_weights_dir(target)
    return weights if weights is not None else resolve_model(target)


def tokenizer_mismatch(a: Any, b: Any) -> str | None:
    """Why two tokenizers do not give the same ids for the same text (None: they do): their
    vocabularies (token -> id, added tokens included) and BOS/EOS tokens are compared."""
    va, vb = a.get_vocab(), b.get_vocab()
    if va != vb:
        differ = sorted(k for k in va.keys() | vb.keys() if va.get(k) != vb.get(k))
        return (
            f"vocabularies differ ({len(va)} vs {len(vb)} tokens; {len(differ)} tokens differ, "
            f"e.g. {differ[:3]})"
        )
    for name in ("eos_token", "bos_token"):
        if getattr(a, name) != getattr(b, name):
            return f"{name} differs ({getattr(a, name)!r} vs {getattr(b, name)!r})"
    return None


def shared_tokenizer_problem(student: str, teacher: str) -> str | None:
    """None when ``student`` and ``teacher`` (models or run dirs) share a tokenizer; else a
    message naming both and what differs."""
    why = tokenizer_mismatch(
        load_tokenizer(tokenizer_dir(student)), load_tokenizer(tokenizer_dir(teacher))
    )
    if why is None:
        return None
    return (
        f"distill.teacher {teacher!r} and the student model.name_or_path {student!r} do not "
        f"share a tokenizer: {why}. Distillation compares their next-token distributions id by "
        "id, so both must use the same tokenizer."
    )


def check_shared_tokenizer(student: str, teacher: str) -> Check:
    """The ``tokenizer`` check of a distillation config."""
    problem = shared_tokenizer_problem(student, teacher)
    if problem is not None:
        return Check("tokenizer", "FAIL", problem)
    return Check("tokenizer", "PASS", f"teacher {teacher} and student share one tokenizer")
