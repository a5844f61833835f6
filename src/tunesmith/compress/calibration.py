"""Calibration texts for pruning: read from a file, or a small built-in English set.

A file is ``.txt`` (one text per non-blank line) or ``.jsonl`` (each record has ``text``, or
``messages`` rendered with the model's chat template, or ``prompt`` + ``completion``/``response``).
Every fourth text is held out for the perplexity before/after; the rest rank the layers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError

BUILTIN_TEXTS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog while the farmer watches from the gate.",
    "Water boils at one hundred degrees Celsius at sea level and freezes at zero degrees.",
    "To make tea, boil the water, pour it over the leaves and wait three or four minutes.",
    "The capital of France is Paris, and the capital of Italy is Rome.",
    "Machine learning models are trained on examples and then asked about new inputs.",
    "She said that they would come back tomorrow morning with their friends and a map.",
    "A good answer is short, correct and polite; it repeats nothing the user already said.",
    "The train left the station at nine and reached the coast a little after noon.",
    "Plants turn sunlight, water and carbon dioxide into sugar and release oxygen.",
    "Please write a short poem about the sea, the sun and the wind over the hills.",
    "Numbers such as 3, 14, 42 and 2024 appear in many questions and their answers.",
    "When the library opened, the children ran to the shelves with the picture books.",
)


class CalibrationError(UserError):
    """The calibration file cannot be read or holds too few texts."""


def _record_text(record: Any, tokenizer: Any, where: str) -> str:
    if not isinstance(record, dict):
        raise CalibrationError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if isinstance(record.get("text"), str):
        return record["text"]
    if isinstance(record.get("messages"), list):
        return str(tokenizer.apply_chat_template(record["messages"], tokenize=False))
    reply = record.get("completion", record.get("response"))
    if isinstance(record.get("prompt"), str) and isinstance(reply, str):
        return record["prompt"] + reply
    raise CalibrationError(
        f"{where}: needs a 'text' string, a 'messages' list, or 'prompt' + 'completion'"
    )


def read_texts(path: Path | None, tokenizer: Any) -> list[str]:
    """The calibration texts of ``path`` (built-in texts when ``None``)."""
    if path is None:
        return list(BUILTIN_TEXTS)
    if not path.is_file():
        raise CalibrationError(f"--calibration {path}: no such file")
    lines = path.read_text(encoding="utf-8").splitlines()
    texts: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise CalibrationError(f"{path}:{number}: not valid JSON ({e.msg})") from e
            texts.append(_record_text(record, tokenizer, f"{path}:{number}"))
        else:
            texts.append(line)
    if len(texts) < 2:
        raise CalibrationError(
            f"{path}: needs at least 2 texts (one is held out), got {len(texts)}"
        )
    return texts


def split_texts(texts: list[str]) -> tuple[list[str], list[str]]:
    """``(calibration, held_out)``: every fourth text (at least one) is held out."""
    if len(texts) < 4:
        return texts[:-1], texts[-1:]
    held = [t for i, t in enumerate(texts) if i % 4 == 3]
    return [t for i, t in enumerate(texts) if i % 4 != 3], held
