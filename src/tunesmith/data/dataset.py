"""From the data section of a config to tokenized train and held-out splits.

Nothing is dropped without a record: malformed rows, and examples with no trainable token left,
raise naming ``FILE:LINE`` (or, with ``on_error=skip``, become rejects); examples removed by
policy (over-long with ``truncation=drop``) are always written to the rejects with their reason
and counted in the log. When no training example is left the error starts with the first
reject's line and reason, and carries the rejects for the run dir
(:class:`~tunesmith.data.records.NoUsableDataError`).
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from tunesmith.config import DataSection, DatasetSpec
from tunesmith.data.formats import detect_format, load_examples, unused_keys
from tunesmith.data.mixing import draw, replay_count, temperature_counts
from tunesmith.data.packing import collate_packed, pack_first_fit_decreasing
from tunesmith.data.readers import iter_rows
from tunesmith.data.records import DataError, Example, NoUsableDataError
from tunesmith.data.split import cap_held_out, hold_out
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
    stats: dict[str, Any]


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def dataset_specs(cfg: DataSection) -> list[DatasetSpec]:
    """``data.train`` as a list of datasets (a plain path is a dataset of its own)."""
    return list(cfg.train)


def data_files(cfg: DataSection) -> list[str]:
    """Every input path a config reads (for content hashes in env.json)."""
    paths = [p for spec in cfg.train for p in _as_list(spec.path)] + _as_list(cfg.validation)
    return paths + (_as_list(cfg.replay.path) if cfg.replay else [])


def spec_name(spec: DatasetSpec) -> str:
    return spec.tag or Path(_as_list(spec.path)[0]).stem


def _tagged(ex: Example, tag: str | None, fallback: str) -> Example:
    """The record with ``meta['tag']`` set: the dataset's tag, else the record's own tag/task
    field, else ``fallback`` (the file name)."""
    final = tag or ex.meta.get("tag") or ex.meta.get("task") or fallback
    if not final or ex.meta.get("tag") == final:
        return ex
    return replace(ex, meta={**ex.meta, "tag": str(final)})


def _read_dataset(
    paths: list[str],
    fmt: str,
    split: str,
    tag: str,
    cfg: DataSection,
    rejects: list[dict[str, Any]],
) -> list[Example]:
    """All files of one dataset; they must share one schema (format)."""
    out: list[Example] = []
    first_format: tuple[str, str] | None = None
    for path in paths:
        chosen = fmt if fmt != "auto" else detect_file_format(path, split, cfg.on_error)
        if chosen is None:  # skip mode, no readable record: each becomes a reject below
            chosen = "auto"
        elif first_format is not None and chosen != first_format[1]:
            raise DataError(
                path,
                1,
                None,
                f"format '{chosen}' differs from '{first_format[1]}' "
                f"of {first_format[0]} in the same dataset; list the files as "
                "separate datasets to mix formats",
            )
        if chosen != "auto":
            first_format = first_format or (path, chosen)
        examples, bad = load_examples(path, chosen, split=split, on_error=cfg.on_error)
        _warn_unused(path, chosen, examples)
        out.extend(_tagged(ex, tag, Path(path).stem) for ex in examples)
        rejects.extend({**r, "stage": "read"} for r in bad)
    return out


def _warn_unused(path: str, fmt: str, examples: list[Example]) -> None:
    """One line naming the keys (columns) of a file that its format does not train on."""
    if unused := unused_keys(examples):
        names = ", ".join(repr(k) for k in unused)
        print(
            f"[tunesmith] warning: {path}: {names} not used by the '{fmt}' format (kept as "
            "metadata, not trained on)",
            file=sys.stderr,
            flush=True,
        )


def detect_file_format(path: str, split: str = "train", on_error: str = "raise") -> str | None:
    """The format of a file, detected from its first record.

    With ``on_error="raise"`` a first record that cannot be read, or has no known format, raises
    its own error (file, line and reason). With ``"skip"`` detection uses the first record that
    reads and has a known format, and returns ``None`` when the file holds records but none
    does: :func:`load_examples` then rejects each with its reason.

    Raises:
        DataError: the file holds no record at all, or (raise mode) its first record is bad.
    """
    skipped = 0

    def skip(err: DataError, raw: Any) -> None:
        nonlocal skipped
        skipped += 1

    handler = skip if on_error == "skip" else None
    for line, row in iter_rows(path, split=split, on_bad_row=handler):
        try:
            return detect_format(row, path, line)
        except DataError:
            if handler is None:
                raise
            skipped += 1
    if skipped:
        return None
    raise DataError(path, None, None, "no records (the file is empty or holds only blank lines)")


def split_held_out(
    examples: list[Example], fraction: float, seed: int, cap: int | None
) -> tuple[list[Example], list[Example]]:
    """A fixed-seed held-out split (:func:`tunesmith.data.split.hold_out`)."""
    return hold_out(examples, fraction, seed, cap)


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
            if cfg.on_error == "raise" and not _dropped_by_policy(err, cfg):
                raise DataError(
                    err.source,
                    err.line,
                    err.field_name,
                    f"{err.reason} (data.on_error=skip records it in rejects.jsonl instead)",
                ) from err
            rejects.append({**err.to_json(), "stage": f"encode:{split}", "row": ex.to_json()})
            stats[f"{split}_rejected"] += 1
            continue
        stats[f"{split}_truncated"] += int(enc.truncated)
        out.examples.append(ex)
        out.encoded.append(enc)
    return out


def _dropped_by_policy(err: DataError, cfg: DataSection) -> bool:
    """Whether the encoder dropped an example because ``truncation: drop`` asks it to (a reject
    in both modes), rather than for a defect of the example (an error in raise mode)."""
    return cfg.truncation == "drop" and err.field_name is None and "> max_length" in err.reason


def _count_for(spec: DatasetSpec, size: int) -> int:
    if spec.count is not None:
        if spec.count > size:
            raise DataError(
                str(_as_list(spec.path)[0]),
                None,
                "count",
                f"dataset '{spec_name(spec)}' has {size} usable training examples, "
                f"fewer than count={spec.count}",
            )
        return spec.count
    if spec.weight is not None:
        return round(spec.weight * size)
    return size


def _take(split: Split, indices: list[int], into: Split) -> None:
    into.examples.extend(split.examples[i] for i in indices)
    into.encoded.extend(split.encoded[i] for i in indices)


def _mix(
    parts: list[tuple[DatasetSpec, Split]],
    cfg: DataSection,
    replay: Split | None,
    mix: dict[str, int],
) -> Split:
    """The training set of one epoch: datasets by weight/count or tasks by temperature, plus
    replay; every draw is seeded."""
    rng = random.Random(cfg.seed)
    out = Split()
    if cfg.task_temperature is not None:
        pooled: dict[str, Split] = {}
        for _, part in parts:
            for ex, enc in zip(part.examples, part.encoded, strict=True):
                pool = pooled.setdefault(ex.meta.get("tag", ""), Split())
                pool.examples.append(ex)
                pool.encoded.append(enc)
        counts = temperature_counts(
            {k: len(v.encoded) for k, v in pooled.items()}, cfg.task_temperature
        )
        for tag in sorted(counts):
            _take(pooled[tag], draw(counts[tag], len(pooled[tag].encoded), rng), out)
            mix[tag or "(untagged)"] = counts[tag]
    else:
        for spec, part in parts:
            n = _count_for(spec, len(part.encoded))
            _take(part, draw(n, len(part.encoded), rng), out)
            mix[spec_name(spec)] = mix.get(spec_name(spec), 0) + n
    if replay is not None and cfg.replay is not None:
        n = replay_count(len(out.encoded), cfg.replay.fraction)
        _take(replay, draw(n, len(replay.encoded), rng), out)
        mix[cfg.replay.tag] = n
    return out


def prepare_data(cfg: DataSection, tokenizer: Any) -> PreparedData:
    """Read, split, encode and mix the data of a config; every dropped record is in rejects."""
    rejects: list[dict[str, Any]] = []
    stats: dict[str, Any] = {
        k: 0 for k in ("train_rejected", "val_rejected", "train_truncated", "val_truncated")
    }
    val_paths = _as_list(cfg.validation)
    parts: list[tuple[DatasetSpec, Split]] = []
    val = Split()
    for spec in dataset_specs(cfg):
        rows = _read_dataset(
            _as_list(spec.path),
            spec.format or cfg.format,
            spec.split or cfg.split,
            spec.tag,
            cfg,
            rejects,
        )
        train_rows, held = (
            (rows, []) if val_paths else split_held_out(rows, cfg.val_fraction, cfg.seed, None)
        )
        parts.append((spec, _encode_all(train_rows, tokenizer, cfg, rejects, stats, "train")))
        _extend(val, _encode_all(held, tokenizer, cfg, rejects, stats, "val"))
    if val_paths:
        held = _read_dataset(val_paths, cfg.format, cfg.split, None, cfg, rejects)
        val = _encode_all(held, tokenizer, cfg, rejects, stats, "val")
    if cfg.max_val_examples is not None and len(val.encoded) > cfg.max_val_examples:
        keep = cap_held_out(list(range(len(val.encoded))), cfg.max_val_examples, cfg.seed)
        val = Split([val.examples[i] for i in keep], [val.encoded[i] for i in keep])
    replay = None
    if cfg.replay is not None:
        rows = _read_dataset(
            _as_list(cfg.replay.path),
            cfg.replay.format or "auto",
            cfg.split,
            cfg.replay.tag,
            cfg,
            rejects,
        )
        rows = [replace(r, meta={**r.meta, "tag": cfg.replay.tag}) for r in rows]
        replay = _encode_all(rows, tokenizer, cfg, rejects, stats, "train")
    stats["read_rejected"] = sum(1 for r in rejects if r.get("stage") == "read")
    mix: dict[str, int] = {}
    train = _mix(parts, cfg, replay, mix)
    if not train.encoded:
        first = str(_as_list(dataset_specs(cfg)[0].path)[0])
        raise NoUsableDataError.from_rejects(first, "training example", rejects)
    stats["train_examples"], stats["val_examples"] = len(train.encoded), len(val.encoded)
    stats["mix"] = mix
    return PreparedData(train=train, val=val, rejects=rejects, stats=stats)


def _extend(into: Split, other: Split) -> None:
    into.examples.extend(other.examples)
    into.encoded.extend(other.encoded)


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
