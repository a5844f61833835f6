"""Chat templates and the encoding of canonical examples into ``input_ids`` and ``labels``.

Templates are selected by name (:data:`TEMPLATES`): ``"tokenizer"`` uses the tokenizer's own
``chat_template``; the built-ins (``chatml``, ``llama2``, ``llama3``, ``alpaca``) are Jinja strings
from :mod:`tunesmith.data.chat_templates`. All are rendered through
``tokenizer.apply_chat_template(..., tokenize=False)``, and :func:`template_string` returns the
exact string used, to be saved as the tokenizer's ``chat_template`` for serving.

Assistant masks never rely on ``{% generation %}`` markers (most templates, SmolLM2's included, have
none). For every assistant turn ``i`` the conversation is rendered up to turn ``i`` with the
generation prompt, and up to and including turn ``i``; both must be prefixes of the full rendering.
The characters between them (minus trailing whitespace) are the assistant turn: its content and
its end-of-turn marker. The full text is tokenized once with offsets, and a token is trained when
its character span overlaps an assistant span (so a first word merged with the preceding space by
the tokenizer is still trained).

Control-token text inside message contents (for example a literal ``<|im_end|>``) is tokenized as
the control token, as ``apply_chat_template`` does by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import jinja2

from tunesmith.data.chat_templates import (
    BUILTIN_TEMPLATES,
    EOS_APPEND_PREAMBLE,
    FIXED_END_OF_TURN,
    KNOWN_END_OF_TURN,
)
from tunesmith.data.records import DataError, Example, Message

IGNORE_INDEX = -100
"""Label value of positions that are not trained (the PyTorch cross-entropy default)."""

TEMPLATES: tuple[str, ...] = ("tokenizer", *BUILTIN_TEMPLATES)
"""Names accepted by ``template=`` arguments."""

TrainOn = Literal["assistant", "all"]
Truncation = Literal["truncate", "drop"]

_PROBE_USER = "tunesmith-probe-user"
_PROBE_ASSISTANT = "tunesmith-probe-assistant"


class ChatTemplateError(ValueError):
    """A template (not a data record) cannot be used: unknown, missing or inconsistent."""


@dataclass
class Encoded:
    """One encoded example, unpadded.

    ``labels`` equal ``input_ids`` at trained positions and :data:`IGNORE_INDEX` elsewhere; the
    shift for next-token prediction happens in the loss, as in Hugging Face models.
    """

    input_ids: list[int]
    labels: list[int]
    n_trained: int
    truncated: bool


def _check_name(name: str) -> None:
    if name not in TEMPLATES:
        raise ChatTemplateError(f"unknown chat template {name!r}; choose one of {list(TEMPLATES)}")


def _require_eos(tokenizer: Any) -> str:
    eos = getattr(tokenizer, "eos_token", None)
    if not eos:
        raise ChatTemplateError("the tokenizer has no eos_token; assistant turns must end with one")
    return str(eos)


def _tokenizer_template(tokenizer: Any) -> str:
    if getattr(tokenizer, "chat_template", None) is None:
        raise ChatTemplateError(
            "template 'tokenizer' was chosen but the tokenizer has no chat_template; "
            f"pick a built-in one of {list(BUILTIN_TEMPLATES)}"
        )
    return str(tokenizer.get_chat_template())


def _detect_end_of_turn(raw: str, tokenizer: Any) -> str | None:
    """The end-of-turn text a tokenizer template writes after assistant content, if any."""
    probe = [
        {"role": "user", "content": _PROBE_USER},
        {"role": "assistant", "content": _PROBE_ASSISTANT},
    ]
    text = tokenizer.apply_chat_template(probe, chat_template=raw, tokenize=False)
    at = text.rfind(_PROBE_ASSISTANT)
    if at < 0:
        raise ChatTemplateError(
            "template 'tokenizer' does not render assistant contents verbatim; use a built-in"
        )
    after = text[at + len(_PROBE_ASSISTANT) :].lstrip()
    for marker in (_require_eos(tokenizer), *KNOWN_END_OF_TURN):
        if after.startswith(marker):
            return marker
    return None


def template_string(name: str, tokenizer: Any) -> str:
    """The Jinja chat template actually used for ``name`` with this tokenizer.

    For ``"tokenizer"`` this is the tokenizer's own template, prefixed with
    :data:`~tunesmith.data.chat_templates.EOS_APPEND_PREAMBLE` when that template does not end
    assistant turns with EOS or a known end-of-turn marker. Save it as the tokenizer's
    ``chat_template`` so that serving formats prompts exactly as training did.
    """
    _check_name(name)
    _require_eos(tokenizer)
    if name != "tokenizer":
        return BUILTIN_TEMPLATES[name]
    raw = _tokenizer_template(tokenizer)
    if _detect_end_of_turn(raw, tokenizer) is None:
        return EOS_APPEND_PREAMBLE + raw
    return raw


def end_of_turn_text(name: str, tokenizer: Any) -> str:
    """The text that ends every assistant turn: use it as a stop string when serving."""
    _check_name(name)
    eos = _require_eos(tokenizer)
    if name in FIXED_END_OF_TURN:
        return FIXED_END_OF_TURN[name]
    if name == "tokenizer":
        return _detect_end_of_turn(_tokenizer_template(tokenizer), tokenizer) or eos
    return eos


def render_messages(
    messages: Sequence[Message], tokenizer: Any, jinja: str, *, generation_prompt: bool
) -> str:
    """``messages`` rendered as text with the Jinja chat template ``jinja``."""
    conversation = [{"role": m.role, "content": m.content} for m in messages]
    return str(
        tokenizer.apply_chat_template(
            conversation,
            chat_template=jinja,
            tokenize=False,
            add_generation_prompt=generation_prompt,
        )
    )


def render_prompt(messages: Sequence[Message], tokenizer: Any, template: str = "tokenizer") -> str:
    """The conversation rendered with the assistant generation prompt, ready for inference."""
    return render_messages(
        messages, tokenizer, template_string(template, tokenizer), generation_prompt=True
    )


def encode_prompt(
    messages: Sequence[Message], tokenizer: Any, template: str = "tokenizer"
) -> list[int]:
    """Token ids of :func:`render_prompt`, with BOS handled exactly as in training (never doubled).

    Built-ins such as ``llama2``/``llama3`` write BOS themselves, so tokenizing their prompt with
    the tokenizer's default special tokens would double it; use this function instead.
    """
    text = render_prompt(messages, tokenizer, template)
    return list(tokenizer(text, add_special_tokens=_needs_bos(text, tokenizer))["input_ids"])


def _assistant_spans(
    messages: Sequence[Message], tokenizer: Any, jinja: str, name: str, full: str
) -> list[tuple[int, int]]:
    """Character spans of the assistant turns (content + end-of-turn) in ``full``."""
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message.role != "assistant":
            continue
        if i == 0:
            raise jinja2.TemplateError("an assistant turn cannot open the conversation")
        before = render_messages(messages[:i], tokenizer, jinja, generation_prompt=True)
        upto = render_messages(messages[: i + 1], tokenizer, jinja, generation_prompt=False)
        if not (upto.startswith(before) and full.startswith(upto)):
            raise ChatTemplateError(
                f"chat template {name!r} renders a conversation prefix differently from the full "
                f"conversation (assistant turn {i}), so assistant tokens cannot be located; "
                "use a built-in template or train_on='all'"
            )
        end = len(before) + len(upto[len(before) :].rstrip())
        if end > len(before):
            spans.append((len(before), end))
    return spans


def _needs_bos(text: str, tokenizer: Any) -> bool:
    """Whether to let the tokenizer add its special tokens: only if the text lacks the BOS."""
    bos = getattr(tokenizer, "bos_token", None)
    return not (bos and bos in text)


def _tokenize(text: str, tokenizer: Any) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and character offsets of ``text``; BOS is added only if the text lacks it."""
    if not getattr(tokenizer, "is_fast", False):
        raise ChatTemplateError(
            "assistant masks need character offsets, which only fast (Rust) tokenizers provide; "
            f"got {type(tokenizer).__name__}"
        )
    enc = tokenizer(
        text, add_special_tokens=_needs_bos(text, tokenizer), return_offsets_mapping=True
    )
    return list(enc["input_ids"]), [(int(s), int(e)) for s, e in enc["offset_mapping"]]


def _chat_labels(
    ex: Example, tokenizer: Any, template: str, train_on: TrainOn
) -> tuple[list[int], list[int]]:
    jinja = template_string(template, tokenizer)
    try:
        full = render_messages(ex.messages, tokenizer, jinja, generation_prompt=False)
        spans = (
            _assistant_spans(ex.messages, tokenizer, jinja, template, full)
            if train_on == "assistant"
            else [(0, len(full))]
        )
    except jinja2.TemplateError as exc:
        raise DataError(
            ex.source, ex.line, "messages", f"chat template {template!r} cannot render it: {exc}"
        ) from exc
    ids, offsets = _tokenize(full, tokenizer)
    if train_on == "all":
        return ids, list(ids)
    labels = [
        tok if end > start and any(start < b and end > a for a, b in spans) else IGNORE_INDEX
        for tok, (start, end) in zip(ids, offsets, strict=True)
    ]
    return ids, labels


def _text_labels(text: str, tokenizer: Any) -> tuple[list[int], list[int]]:
    """Plain text for continued pre-training: all tokens trained, EOS appended."""
    _require_eos(tokenizer)
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if not ids or ids[-1] != tokenizer.eos_token_id:
        ids.append(int(tokenizer.eos_token_id))
    return ids, list(ids)


def encode_example(
    ex: Example,
    tokenizer: Any,
    *,
    template: str = "tokenizer",
    max_length: int,
    train_on: TrainOn = "assistant",
    truncation: Truncation = "truncate",
) -> Encoded:
    """Tokenize one example and label the tokens to train.

    Chat examples are rendered with ``template``; with ``train_on="assistant"`` only assistant
    turns (content and end-of-turn marker) are trained, with ``"all"`` every token is. Text
    examples are tokenized with the tokenizer's default special tokens plus a final EOS, all
    trained.

    Raises:
        DataError: the example is longer than ``max_length`` and ``truncation="drop"``; it has no
            trainable token (after truncation); or the template refuses the conversation.
        ChatTemplateError: the template is unknown or unusable with this tokenizer.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be positive, got {max_length}")
    if train_on not in ("assistant", "all"):
        raise ValueError(f"train_on must be 'assistant' or 'all', got {train_on!r}")
    if truncation not in ("truncate", "drop"):
        raise ValueError(f"truncation must be 'truncate' or 'drop', got {truncation!r}")
    _check_name(template)
    if ex.text is not None:
        ids, labels = _text_labels(ex.text, tokenizer)
    elif not ex.messages:
        raise DataError(ex.source, ex.line, "messages", "empty conversation")
    else:
        ids, labels = _chat_labels(ex, tokenizer, template, train_on)
    truncated = len(ids) > max_length
    if truncated:
        if truncation == "drop":
            raise DataError(
                ex.source, ex.line, None, f"{len(ids)} tokens > max_length {max_length}"
            )
        ids, labels = ids[:max_length], labels[:max_length]
    n_trained = sum(label != IGNORE_INDEX for label in labels)
    if n_trained == 0:
        field = "text" if ex.text is not None else "messages"
        why = " within max_length" if truncated else " (no assistant turn)"
        raise DataError(ex.source, ex.line, field, f"no trainable token{why}")
    return Encoded(input_ids=ids, labels=labels, n_trained=n_trained, truncated=truncated)
