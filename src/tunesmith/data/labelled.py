"""Labelled text for classification: reading, the label set, held-out split, encoding, collation.

The held-out split is :mod:`tunesmith.data.split`'s one rule: ``data.validation`` files, else
``data.val_fraction`` of train by a fixed seed; ``data.max_val_examples`` caps either."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunesmith.config.classify import ClassifyDataSection
from tunesmith.data.readers import iter_rows
from tunesmith.data.records import DataError
from tunesmith.data.split import cap_held_out, hold_out
from tunesmith.errors import UserError


class LabelError(UserError):
    """A held-out label the model cannot predict (never seen in training), or too few labels."""


@dataclass(frozen=True)
class LabelledText:
    source: str
    line: int
    text: str
    label: str


@dataclass
class ClassifyData:
    train: list[LabelledText]
    held_out: list[LabelledText]
    labels: list[str]  # id -> label, sorted

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}


def _label(row: dict[str, Any], field: str, source: str, line: int) -> str:
    if field not in row:
        raise DataError(source, line, field, f"missing; the row has {sorted(row)}")
    value = row[field]
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DataError(source, line, field, f"expected a string or integer label, got {value!r}")
    text = str(value).strip()
    if not text:
        raise DataError(source, line, field, "empty label")
    return text


def _text(row: dict[str, Any], field: str, source: str, line: int) -> str:
    if field not in row:
        raise DataError(source, line, field, f"missing; the row has {sorted(row)}")
    value = row[field]
    if not isinstance(value, str) or not value.strip():
        raise DataError(source, line, field, f"expected non-empty text, got {value!r}")
    return value


def read_labelled(path: str | Path, text_field: str, label_field: str) -> list[LabelledText]:
    """Every row of a CSV/JSONL/JSON/parquet file or saved dataset as (text, label)."""
    source = str(path)
    return [
        LabelledText(
            source,
            line,
            _text(row, text_field, source, line),
            _label(row, label_field, source, line),
        )
        for line, row in iter_rows(path)
    ]


def train_files(data: ClassifyDataSection) -> list[str]:
    return list(data.train)


def validation_files(data: ClassifyDataSection) -> list[str]:
    v = data.validation
    return [] if v is None else (v if isinstance(v, list) else [v])


def _sorted_labels(labels: set[str]) -> list[str]:
    """Integers in numeric order, else alphabetical."""
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def check_known(held_out: list[LabelledText], labels: list[str]) -> None:
    """Every held-out label must be one the model learns; else name the first and the choices."""
    known = set(labels)
    unseen = [x for x in held_out if x.label not in known]
    if unseen:
        first = unseen[0]
        names = sorted({x.label for x in unseen})
        raise LabelError(
            f"{first.source}:{first.line}: label {first.label!r} does not occur in the training "
            f"data ({len(unseen)} held-out rows with labels {names}); the labels the model "
            f"learns are {labels}"
        )


def prepare_classify_data(
    data: ClassifyDataSection, text_field: str, label_field: str
) -> ClassifyData:
    """Train and held-out rows (:func:`tunesmith.data.split.hold_out`), and the label set of the
    training rows."""
    train = [x for f in train_files(data) for x in read_labelled(f, text_field, label_field)]
    held_files = validation_files(data)
    if held_files:
        held = [x for f in held_files for x in read_labelled(f, text_field, label_field)]
        held = cap_held_out(held, data.max_val_examples, data.seed)
    else:
        train, held = hold_out(train, data.val_fraction, data.seed, data.max_val_examples)
    labels = _sorted_labels({x.label for x in train})
    if len(labels) < 2:
        raise LabelError(f"{train_files(data)}: classification needs >= 2 labels, found {labels}")
    check_known(held, labels)
    return ClassifyData(train, held, labels)


def encode(
    tokenizer: Any, items: list[LabelledText], label2id: dict[str, int], max_length: int
) -> list[tuple[list[int], int]]:
    """(token ids cut to ``max_length``, label id) per item."""
    if not items:  # a tokenizer given no texts fails
        return []
    ids = tokenizer([x.text for x in items], truncation=True, max_length=max_length)["input_ids"]
    return [(list(i), label2id[x.label]) for i, x in zip(ids, items, strict=True)]


def check_pad_free(
    encoded: list[tuple[list[int], int]], items: list[LabelledText], pad_id: int, pad: str
) -> None:
    """Decoder classifiers (transformers' ``*ForSequenceClassification``) pool the logits of the
    rightmost token that is not ``pad_token_id``, ignoring the attention mask; when pad = eos
    (SmolLM2) a text holding that token would be pooled at the wrong position."""
    for (ids, _), x in zip(encoded, items, strict=True):
        if pad_id in ids:
            raise DataError(
                x.source,
                x.line,
                "text",
                f"contains the padding token {pad!r} (id {pad_id}); the classifier pools at the "
                "last non-padding token, so remove it from the text",
            )


def collate(batch: list[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids / attention_mask [B, T] and labels [B]."""
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, _) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[row, : len(ids)] = 1
    labels = torch.tensor([label for _, label in batch], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
