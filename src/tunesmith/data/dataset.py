"""From the data section of a config to tokenized train and held-out splits.

Nothing is dropped without a record: malformed rows raise (or, with ``on_error=skip``, become
rejects), and examples removed by policy (over-long with ``truncation=drop``, no trainable token
left) are always written to the rejects with their reason and counted in the log.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunesmith.config import DataSection
from tunesmith.data.formats import load_examples
from tunesmith.data.packing import collate_packed, pack_first_fit_decreasing
from tunesmith.data.records import DataError, Example
from tunesmith.data.templates import IGNORE_INDEX, Encoded, encode_example


@dataclass
class Split:
    examples: list[Example] = field(default_factory=list)
    encoded: list[Encoded] = field(default_factory=list)

    @property
    def trained_tokens(self) -> int:
        return sum(e.n_trained for e in self.encoded)


@dataclass
class PreparedData:
    train: Split
    val: Split
    rejects: list[dict[str, Any]]
    stats: dict[str, int]


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _read(paths: list[str], cfg: DataSection, rejects: list[dict[str, Any]]) -> list[Example]:
    out: list[Example] = []
    for path in paths:
        examples, bad = load_examples(path, cfg.format, split=cfg.split, on_error=cfg.on_error)
        out.extend(examples)
        rejects.extend({**r, "stage": "read"} for r in bad)
    return out


def split_held_out(
    examples: list[Example], fraction: float, seed: int, cap: int | None
) -> tuple[list[Example], list[Example]]:
    """A fixed-seed held-out split: the same data and seed always give the same split."""
    if fraction <= 0 or len(examples) < 2:
        return examples, []
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(fraction * len(examples)))
    if cap is not None:
        n_val = min(n_val, cap)
    held = set(order[:n_val])
    train = [e for i, e in enumerate(examples) if i not in held]
    val = [e for i, e in enumerate(examples) if i in held]
    return train, val


def _encode_all(
    examples: list[Example],
    tokenizer: Any,
    cfg: DataSection,
    rejects: list[dict[str, Any]],
    stats: dict[str, int],
    split: str,
) -> Split:
    out = Split()
    for ex in examples:
        try:
            enc = encode_example(
                ex,
                tokenizer,
                template=cfg.template,
                max_length=cfg.max_length,
                train_on=cfg.train_on,
                truncation=cfg.truncation,
            )
        except DataError as err:
            rejects.append({**err.to_json(), "stage": f"encode:{split}", "row": ex.to_json()})
            stats[f"{split}_rejected"] += 1
            continue
        stats[f"{split}_truncated"] += int(enc.truncated)
        out.examples.append(ex)
        out.encoded.append(enc)
    return out


def prepare_data(cfg: DataSection, tokenizer: Any) -> PreparedData:
    rejects: list[dict[str, Any]] = []
    train_rows = _read(_as_list(cfg.train), cfg, rejects)
    val_paths = _as_list(cfg.validation)
    if val_paths:
        val_rows = _read(val_paths, cfg, rejects)
    else:
        train_rows, val_rows = split_held_out(
            train_rows, cfg.val_fraction, cfg.seed, cfg.max_val_examples
        )
    if cfg.max_val_examples is not None:
        val_rows = val_rows[: cfg.max_val_examples]
    stats = {k: 0 for k in ("train_rejected", "val_rejected", "train_truncated", "val_truncated")}
    stats["read_rejected"] = len(rejects)
    train = _encode_all(train_rows, tokenizer, cfg, rejects, stats, "train")
    val = _encode_all(val_rows, tokenizer, cfg, rejects, stats, "val")
    if not train.encoded:
        raise DataError(
            _as_list(cfg.train)[0],
            None,
            None,
            f"no usable training example ({len(rejects)} rejected; see rejects)",
        )
    stats["train_examples"], stats["val_examples"] = len(train.encoded), len(val.encoded)
    return PreparedData(train=train, val=val, rejects=rejects, stats=stats)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")


def collate(batch: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch to its longest example.

    Returns ``input_ids``, ``attention_mask`` and ``labels``, each [B, T_max]; padding positions
    have attention 0 and label ``IGNORE_INDEX``, so a pad id equal to EOS is harmless.
    """
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, enc in enumerate(batch):
        n = len(enc.input_ids)
        ids[row, :n] = torch.tensor(enc.input_ids)
        labels[row, :n] = torch.tensor(enc.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def make_rows(encoded: list[Encoded], packing: bool, max_length: int) -> list[tuple[int, ...]]:
    """The training items: one example each, or several packed up to ``max_length`` tokens."""
    if not packing:
        return [(i,) for i in range(len(encoded))]
    rows = pack_first_fit_decreasing([len(e.input_ids) for e in encoded], max_length)
    return [r.items for r in rows]


def collate_rows(
    rows: list[tuple[int, ...]], encoded: list[Encoded], pad_id: int, packed: bool
) -> dict[str, torch.Tensor]:
    if packed:
        return collate_packed([[encoded[i] for i in row] for row in rows], pad_id)
    return collate([encoded[row[0]] for row in rows], pad_id)


def example_order(n: int, seed: int, epoch: int) -> list[int]:
    """The order examples are visited in one epoch; a pure function of (seed, epoch)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen).tolist()


def step_batches(
    n: int, seed: int, micro_batch: int, accum: int, start_step: int = 0
) -> Iterator[list[list[int]]]:
    """Yield, per optimizer step, ``accum`` micro-batches of example indices.

    The examples form one endless stream, epoch after epoch, each epoch in its own fixed-seed
    order; step ``s`` takes items ``[s * micro_batch * accum, (s + 1) * micro_batch * accum)``.
    The data position is therefore the step number alone, which makes resume exact, and
    micro-batch 4 x accumulation 1 sees the same examples as micro-batch 1 x accumulation 4.
    """
    per_step = micro_batch * accum
    pos = start_step * per_step
    orders: dict[int, list[int]] = {}
    while True:
        items = []
        for p in range(pos, pos + per_step):
            epoch = p // n
            if epoch not in orders:
                orders = {epoch: example_order(n, seed, epoch)}
            items.append(orders[epoch][p % n])
        pos += per_step
        yield [items[i : i + micro_batch] for i in range(0, per_step, micro_batch)]
