"""``tunesmith doctor`` for every method but SFT: read the records with the data/ reader of the
method's record kind, split with the one held-out rule, run the method's pre-flight checks and
render a few records. No model is built (the timed step is SFT's only).

===========  ==========================  ================================================
method       records (reader)            checks
===========  ==========================  ================================================
dpo, reward  preference pairs            :func:`tunesmith.checks.pairs.preflight_pairs`
             (``read_preference_data``)
grpo, ppo    prompts (``read_prompts``)  :func:`tunesmith.checks.prompts.preflight_prompts`
classify     labelled texts              :func:`tunesmith.checks.labels.preflight_labels`
             (``read_labelled``)
distill      SFT examples                SFT's :func:`tunesmith.checks.preflight.cheap_checks`
             (``prepare_data``)          + teacher/student tokenizer
embed        query/passage pairs         :func:`tunesmith.checks.embed.preflight_retrieval`
             (``split_pairs``)
===========  ==========================  ================================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from tunesmith.checks.checks import Check
from tunesmith.checks.labels import label_lengths, preflight_labels, render_texts
from tunesmith.checks.lengths import LengthStats
from tunesmith.checks.pairs import (
    SAMPLE_PAIRS,
    check_rejects,
    encode_sides,
    pair_checks,
    render_pairs,
)
from tunesmith.checks.preflight import cheap_checks
from tunesmith.checks.prompts import model_context_length, preflight_prompts, render_prompts
from tunesmith.checks.render import RenderedExample, rendered
from tunesmith.checks.tokenizers import check_shared_tokenizer, tokenizer_dir
from tunesmith.data.dataset import prepare_data
from tunesmith.data.labelled import LabelledText, read_labelled
from tunesmith.data.preference import read_pair_section
from tunesmith.data.prompts import read_prompt_section
from tunesmith.data.records import DataError
from tunesmith.data.split import cap_held_out, hold_out
from tunesmith.data.templates import ChatTemplateError
from tunesmith.errors import UserError
from tunesmith.models.encoders import resolve_backbone
from tunesmith.models.load import load_tokenizer
from tunesmith.models.reward_head import backbone_kind


@dataclass
class Found:
    """What one method's diagnosis produced (the report adds settings and notes)."""

    checks: list[Check]
    examples: list[RenderedExample]
    data: str  # one line: how many records of each split
    lengths: LengthStats | None = None
    notes: list[str] = field(default_factory=list)


def paths(value: Any) -> list[str]:
    """File paths of a ``data.train``/``data.validation`` value: a path, a list of paths, or a
    list of dataset entries with a ``path`` (SFT-style data sections)."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        p = getattr(item, "path", item)
        out += [str(x) for x in p] if isinstance(p, list) else [str(p)]
    return out


def _split(items: Sequence[Any], held: list[Any] | None, d: Any, cap: int | None) -> Any:
    """``(train, held_out)``: the validation records when given, else the one held-out rule."""
    seed = getattr(d, "seed", 1234)
    if held is not None:
        return list(items), cap_held_out(held, cap, seed)
    return hold_out(items, getattr(d, "val_fraction", 0.0), seed, cap)


# ----------------------------------------------------------------------------- pairs


def diagnose_pairs(cfg: Any, model_path: Path, tokenizer: Any, n: int) -> Found:
    d = cfg.data
    splits = read_pair_section(d)
    train, rejects = splits.train, splits.rejects
    line = f"{len(train)} train / {len(splits.val)} held-out pairs, {len(rejects)} rejected"
    if cfg.method == "reward" and backbone_kind(model_path) == "encoder":
        skip = "an encoder reward model reads 'role: content' lines and the reply as a text pair"
        checks = [check_rejects(len(train), rejects), Check("prompt-match", "SKIP", skip)]
        return Found(checks, [], line)
    sample = train[:SAMPLE_PAIRS]
    sides = encode_sides(sample, tokenizer, cfg)
    checks = pair_checks(sample, sides, tokenizer, cfg, rejects)
    return Found(checks, render_pairs(sides, tokenizer, n), line)


# ----------------------------------------------------------------------------- prompts


def diagnose_prompts(cfg: Any, model_path: Path, tokenizer: Any, n: int) -> Found:
    from transformers import AutoConfig

    d = cfg.data
    rejects: list[dict[str, Any]] = []

    train, val = read_prompt_section(d, tokenizer, rejects)
    context = model_context_length(AutoConfig.from_pretrained(str(model_path)))
    checks = preflight_prompts(train, tokenizer, cfg, context_length=context)
    line = f"{len(train)} train / {len(val)} held-out prompts, {len(rejects)} rejected"
    return Found(checks, render_prompts(train, tokenizer, n), line)


# ----------------------------------------------------------------------------- labels


def diagnose_labels(cfg: Any, model_path: Path, tokenizer: Any, n: int) -> Found:
    d, c = cfg.data, cfg.classify

    def read(files: list[str]) -> list[LabelledText]:
        return [x for f in files for x in read_labelled(f, c.text_field, c.label_field)]

    rows = read(paths(d.train))
    held = read(paths(d.validation)) if d.validation else None
    train, val = _split(rows, held, d, getattr(d, "max_val_examples", None))
    decoder = backbone_kind(model_path) == "decoder"
    pad = tokenizer.pad_token_id if decoder else None
    checks = preflight_labels(train, val, tokenizer, cfg, pad_id=pad)
    line = f"{len(train)} train / {len(val)} held-out texts"
    lengths = label_lengths(train, tokenizer, d.max_length)
    return Found(checks, render_texts(train, tokenizer, d.max_length, n), line, lengths)


# ----------------------------------------------------------------------------- examples (distill)


def diagnose_examples(cfg: Any, model_path: Path, tokenizer: Any, n: int) -> Found:
    """Distillation reads SFT's records: SFT's cheap checks, and the teacher's tokenizer
    against the student's."""
    data = prepare_data(cfg.data, tokenizer)
    shared = check_shared_tokenizer(cfg.model.name_or_path, cfg.distill.teacher)
    pairs = zip(data.train.examples[:n], data.train.encoded, strict=False)
    examples = [rendered(enc, tokenizer, f"{ex.source}:{ex.line}") for ex, enc in pairs]
    line = (
        f"{len(data.train.encoded)} train / {len(data.val.encoded)} held-out examples, "
        f"{len(data.rejects)} rejected"
    )
    return Found([shared, *cheap_checks(cfg, tokenizer, data)], examples, line)


# ----------------------------------------------------------------------------- retrieval pairs


def diagnose_retrieval(cfg: Any, model_path: Path, tokenizer: Any, n: int) -> Found:
    """Retrieval pairs (embed), split as the method splits them; batch = one process's."""
    from tunesmith.checks.embed import preflight_retrieval, render_pairs
    from tunesmith.data.retrieval_pairs import split_pairs

    e = cfg.embed
    train, held = split_pairs(cfg.data, e.query_field, e.positive_field, e.negative_field)
    checks = preflight_retrieval(train, held, tokenizer, cfg)
    line = f"{len(train)} train / {len(held)} held-out query/passage pairs"
    return Found(checks, render_pairs(train, tokenizer, cfg.data.max_length, n), line)


DIAGNOSE: dict[str, Callable[[Any, Path, Any, int], Found]] = {
    "dpo": diagnose_pairs,
    "reward": diagnose_pairs,
    "grpo": diagnose_prompts,
    "ppo": diagnose_prompts,
    "classify": diagnose_labels,
    "distill": diagnose_examples,
    "embed": diagnose_retrieval,
}


def model_dir(cfg: Any) -> Path:
    """The base model directory (encoder aliases included, for classify and reward; a
    distillation student may be a run dir: its final/)."""
    if cfg.method == "distill":
        return tokenizer_dir(cfg.model.name_or_path)
    return resolve_backbone(cfg.model.name_or_path)


def diagnose_records(cfg: Any, n_examples: int) -> tuple[Path, Found]:
    """Read, split and check the records of a non-SFT config; a reading error is a FAIL."""
    if cfg.method not in DIAGNOSE:
        raise UserError(f"tunesmith doctor: no checks for method {cfg.method!r}")
    path = model_dir(cfg)
    tokenizer = load_tokenizer(path)
    try:
        return path, DIAGNOSE[cfg.method](cfg, path, tokenizer, n_examples)
    except (DataError, UserError, ChatTemplateError, jinja2.TemplateError) as e:
        return path, Found([Check("data", "FAIL", str(e))], [], "unreadable")
