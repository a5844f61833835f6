"""The cheap pre-flight checks ``train`` runs before every run (no model forward).

:func:`preflight_failures` runs checks 1, 2, 3, 5 and 6 of ``tunesmith doctor`` on the data the
run has just prepared; ``methods/sft.py`` refuses to start on any FAIL (:class:`PreflightError`)
unless ``tunesmith train --skip-preflight`` is given.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Sequence
from typing import Any

import jinja2

from tunesmith.checks.checks import (
    Check,
    check_bos,
    check_end_of_turn,
    check_padding,
    sample_batch,
)
from tunesmith.config import BaseRunConfig
from tunesmith.data.dataset import PreparedData, make_rows
from tunesmith.data.records import Example, Message
from tunesmith.data.templates import (
    ChatTemplateError,
    encode_prompt,
    render_prompt,
    template_string,
)
from tunesmith.models.load import load_tokenizer

WARN_SHARE = 0.05
"""Share of examples truncated or dropped above which the truncation check warns."""

SAMPLE_EXAMPLES = 64
"""Examples packed into rows to build the sample batch (packing all of them would be slow)."""

PROBE = (Message("user", "Hello, who are you?"), Message("assistant", "I am a helpful assistant."))


class PreflightError(ValueError):
    """``train`` refused to start: a pre-flight check failed."""

    def __init__(self, failures: Sequence[str]):
        self.failures = list(failures)
        lines = "\n".join(f"  FAIL {f}" for f in self.failures)
        super().__init__(
            f"pre-flight checks failed:\n{lines}\n"
            "Run `tunesmith doctor <config>` for the full report, or pass --skip-preflight "
            "to `tunesmith train` to train anyway."
        )


def sample_conversation(examples: Sequence[Example]) -> tuple[Message, ...]:
    """The first chat example with an assistant turn after the first message, else a probe."""
    for ex in examples:
        if ex.messages and any(m.role == "assistant" for m in ex.messages[1:]):
            return ex.messages
    return PROBE


def prompt_part(messages: Sequence[Message]) -> list[Message]:
    """The messages before the last assistant turn: the prompt a served model would get."""
    last = max(i for i, m in enumerate(messages) if m.role == "assistant")
    return list(messages[:last])


def saved_tokenizer(tokenizer: Any, jinja: str) -> Any:
    """The tokenizer as a run exports it (``chat_template = jinja``), saved and loaded back the
    way serving loads it; ``tokenizer`` itself is left untouched."""
    clone = copy.deepcopy(tokenizer)
    clone.chat_template = jinja
    with tempfile.TemporaryDirectory(prefix="tunesmith-doctor-") as tmp:
        clone.save_pretrained(tmp)
        return load_tokenizer(tmp)


def _first_difference(a: str, b: str) -> str:
    at = next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )
    return f"at char {at}: training {a[at : at + 30]!r} vs served {b[at : at + 30]!r}"


def _served_mismatch(
    tokenizer: Any, served: Any, template: str, messages: Sequence[Message]
) -> str | None:
    """How serving with ``served`` differs from training with ``template``, or None."""
    jinja = template_string(template, tokenizer)
    conv = [{"role": m.role, "content": m.content} for m in messages]
    prompt = prompt_part(messages)
    pairs = (
        (
            "conversation",
            tokenizer.apply_chat_template(conv, chat_template=jinja, tokenize=False),
            served.apply_chat_template(conv, tokenize=False),
        ),
        (
            "prompt",
            render_prompt(prompt, tokenizer, template),
            served.apply_chat_template(
                conv[: len(prompt)], tokenize=False, add_generation_prompt=True
            ),
        ),
    )
    for what, trained, serving in pairs:
        if trained != serving:
            return f"{what} renders differently {_first_difference(trained, serving)}"
    if encode_prompt(prompt, tokenizer, template) != encode_prompt(prompt, served, "tokenizer"):
        return "prompt token ids differ (BOS handling?)"
    return None


def check_template(
    tokenizer: Any, template: str, messages: Sequence[Message], served: Any | None = None
) -> Check:
    """5. The chat template used in training is the one saved for serving: a sample conversation
    and its prompt render (and tokenize) identically through the saved tokenizer.

    ``served`` defaults to the tokenizer exactly as a run exports and reloads it; pass another
    one (for example the base model's) to compare against it instead.
    """
    try:
        served = (
            served
            if served is not None
            else saved_tokenizer(tokenizer, template_string(template, tokenizer))
        )
        problem = _served_mismatch(tokenizer, served, template, messages)
    except (ChatTemplateError, jinja2.TemplateError) as e:
        return Check("template", "FAIL", f"template {template!r} cannot be saved for serving: {e}")
    if problem:
        return Check("template", "FAIL", f"training and serving templates differ: {problem}")
    return Check(
        "template",
        "PASS",
        f"template {template!r} as saved with the model renders the sample conversation and "
        "prompt exactly as training does (same token ids)",
    )


def _encode_rejects(data: PreparedData, split: str, reason: str) -> int:
    return sum(
        1
        for r in data.rejects
        if r.get("stage") == f"encode:{split}" and reason in r.get("reason", "")
    )


def check_truncation(data: PreparedData) -> Check:
    """6. The share of train examples truncated, dropped as over-long or left with no trained
    token: WARN above :data:`WARN_SHARE`, FAIL when no usable example is left."""
    kept = len(data.train.encoded)
    truncated = sum(e.truncated for e in data.train.encoded)
    dropped = _encode_rejects(data, "train", "> max_length")
    empty = _encode_rejects(data, "train", "no trainable token")
    total = kept + data.stats.get("train_rejected", 0)
    share = (truncated + dropped + empty) / max(total, 1)
    detail = (
        f"{truncated} of {total} train examples truncated, {dropped} dropped as over-long, "
        f"{empty} with no trained token ({100 * share:.1f}%)"
    )
    if kept == 0:
        return Check("truncation", "FAIL", f"no usable training example: {detail}")
    if share > WARN_SHARE:
        return Check("truncation", "WARN", f"{detail}; raise data.max_length or shorten the data")
    return Check("truncation", "PASS", detail)


def cheap_checks(cfg: BaseRunConfig, tokenizer: Any, data: PreparedData) -> list[Check]:
    """Checks 1, 2, 3, 5, 6 on prepared data: no model, well under a second for typical data."""
    encoded = data.train.encoded
    names = [f"{e.source}:{e.line}" for e in data.train.examples]
    sample = encoded[:SAMPLE_EXAMPLES]
    rows = make_rows(sample, cfg.data.packing, cfg.data.max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # None: FAIL below
    batch, row_examples = sample_batch(
        sample, rows, pad, cfg.data.packing, cfg.train.micro_batch_size
    )
    conversation = sample_conversation(data.train.examples)
    try:
        prompt_ids = encode_prompt(prompt_part(conversation), tokenizer, cfg.data.template)
    except (ChatTemplateError, jinja2.TemplateError):
        prompt_ids = None  # the template check reports it
    return [
        check_end_of_turn(encoded, tokenizer, cfg.data.template, names),
        check_bos(encoded, tokenizer, prompt_ids, names),
        check_padding(batch, row_examples, tokenizer, cfg.data.packing),
        check_template(tokenizer, cfg.data.template, conversation),
        check_truncation(data),
    ]


def preflight_failures(cfg: BaseRunConfig, tokenizer: Any, data: PreparedData) -> list[str]:
    """``"name: detail"`` of every cheap check that FAILs (empty when training may start)."""
    return [f"{c.name}: {c.detail}" for c in cheap_checks(cfg, tokenizer, data) if c.failed]
