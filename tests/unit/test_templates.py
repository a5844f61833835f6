"""Unit tests for tunesmith.data.templates: rendering, assistant masks, BOS/EOS, truncation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from transformers import PreTrainedTokenizerFast

from tests.helpers.tiny_tokenizer import SMOLLM2_CHAT_TEMPLATE, make_tiny_tokenizer
from tunesmith.data.chat_templates import BUILTIN_TEMPLATES, EOS_APPEND_PREAMBLE
from tunesmith.data.records import DataError, Example, Message
from tunesmith.data.templates import (
    IGNORE_INDEX,
    TEMPLATES,
    ChatTemplateError,
    Encoded,
    encode_example,
    encode_prompt,
    end_of_turn_text,
    render_prompt,
    template_string,
)

SYSTEM = "You are terse."
USER_1 = "What is the capital of France?"
ANSWER_1 = "The capital of France is Paris."
USER_2 = "And how are you today?"
ANSWER_2 = "I am fine, thank you.\nSee you soon!"

# How each template renders an assistant turn: content plus its trained end-of-turn marker.
TURN: dict[str, Callable[[str, Any], str]] = {
    "tokenizer": lambda c, tok: c + "<|im_end|>",
    "chatml": lambda c, tok: c + "<|im_end|>",
    "llama2": lambda c, tok: f" {c} {tok.eos_token}",
    "llama3": lambda c, tok: c + "<|eot_id|>",
    "alpaca": lambda c, tok: c + tok.eos_token,
}
GENERATION_PREFIX = {
    "tokenizer": "<|im_start|>assistant\n",
    "chatml": "<|im_start|>assistant\n",
    "llama2": " [/INST]",
    "llama3": "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "alpaca": "### Response:\n",
}


def _chat(*, system: bool, turns: int) -> Example:
    msgs = [Message("system", SYSTEM)] if system else []
    msgs += [Message("user", USER_1), Message("assistant", ANSWER_1)]
    if turns == 2:
        msgs += [Message("user", USER_2), Message("assistant", ANSWER_2)]
    return Example(source="train.jsonl", line=7, messages=tuple(msgs))


def _runs(enc: Encoded) -> list[list[int]]:
    """Maximal runs of consecutive trained token ids."""
    runs: list[list[int]] = []
    previous = IGNORE_INDEX
    for tok, label in zip(enc.input_ids, enc.labels, strict=True):
        if label != IGNORE_INDEX:
            if previous == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(tok)
        previous = label
    return runs


def _untrained_text(enc: Encoded, tok: PreTrainedTokenizerFast) -> str:
    ids = [t for t, lab in zip(enc.input_ids, enc.labels, strict=True) if lab == IGNORE_INDEX]
    return tok.decode(ids)


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("system", [True, False])
@pytest.mark.parametrize("turns", [1, 2])
def test_exactly_the_assistant_turns_are_trained(
    tiny_tokenizer: PreTrainedTokenizerFast, template: str, system: bool, turns: int
) -> None:
    ex = _chat(system=system, turns=turns)
    enc = encode_example(ex, tiny_tokenizer, template=template, max_length=512)
    answers = [ANSWER_1, ANSWER_2][:turns]
    runs = _runs(enc)
    assert [tiny_tokenizer.decode(r) for r in runs] == [
        TURN[template](a, tiny_tokenizer) for a in answers
    ]
    eot_id = tiny_tokenizer.convert_tokens_to_ids(end_of_turn_text(template, tiny_tokenizer))
    assert all(r[-1] == eot_id for r in runs)  # the end-of-turn token itself is trained
    assert enc.n_trained == sum(len(r) for r in runs)
    assert not enc.truncated
    assert all(lab in (IGNORE_INDEX, t) for t, lab in zip(enc.input_ids, enc.labels, strict=True))
    untrained = _untrained_text(enc, tiny_tokenizer)
    assert USER_1 in untrained and (USER_2 in untrained) == (turns == 2)
    assert (SYSTEM in untrained) == system
    assert ANSWER_1 not in untrained


def test_smollm2_default_system_prompt_is_rendered_and_untrained(
    tiny_tokenizer: PreTrainedTokenizerFast,
) -> None:
    enc = encode_example(_chat(system=False, turns=1), tiny_tokenizer, max_length=512)
    assert "You are a helpful AI assistant named SmolLM" in _untrained_text(enc, tiny_tokenizer)
    assert [tiny_tokenizer.decode(r) for r in _runs(enc)] == [ANSWER_1 + "<|im_end|>"]


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("add_bos", [True, False])
def test_bos_is_never_doubled(template: str, add_bos: bool) -> None:
    tok = make_tiny_tokenizer(add_bos=add_bos)
    enc = encode_example(_chat(system=True, turns=2), tok, template=template, max_length=512)
    template_has_bos = template in ("llama2", "llama3")
    assert (enc.input_ids[0] == tok.bos_token_id) == (add_bos or template_has_bos)
    assert enc.input_ids[1] != tok.bos_token_id
    assert enc.labels[0] == IGNORE_INDEX


@pytest.mark.parametrize("template", TEMPLATES)
def test_train_on_all_trains_every_token(
    tiny_tokenizer: PreTrainedTokenizerFast, template: str
) -> None:
    ex = _chat(system=True, turns=2)
    enc = encode_example(ex, tiny_tokenizer, template=template, max_length=512, train_on="all")
    masked = encode_example(ex, tiny_tokenizer, template=template, max_length=512)
    assert enc.labels == enc.input_ids == masked.input_ids
    assert enc.n_trained == len(enc.input_ids) > masked.n_trained


@pytest.mark.parametrize("add_bos", [True, False])
def test_text_example_is_fully_trained_with_eos(add_bos: bool) -> None:
    tok = make_tiny_tokenizer(add_bos=add_bos)
    text = "The quick brown fox jumps over the lazy dog."
    enc = encode_example(Example("corpus.txt", 1, text=text), tok, max_length=512)
    body = tok(text, add_special_tokens=False)["input_ids"]
    assert enc.input_ids == [tok.bos_token_id] * add_bos + body + [tok.eos_token_id]
    assert enc.labels == enc.input_ids and enc.n_trained == len(enc.input_ids)


def test_truncate_keeps_the_first_tokens(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    ex = _chat(system=False, turns=2)
    full = encode_example(ex, tiny_tokenizer, template="chatml", max_length=512)
    cut = len(full.input_ids) - 5
    enc = encode_example(ex, tiny_tokenizer, template="chatml", max_length=cut)
    assert enc.truncated and len(enc.input_ids) == cut
    assert enc.input_ids == full.input_ids[:cut] and enc.labels == full.labels[:cut]
    assert enc.n_trained == sum(lab != IGNORE_INDEX for lab in enc.labels) < full.n_trained


def test_drop_raises_data_error(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    with pytest.raises(DataError, match="tokens > max_length 10") as info:
        ex = _chat(system=False, turns=1)
        encode_example(ex, tiny_tokenizer, template="chatml", max_length=10, truncation="drop")
    assert (info.value.source, info.value.line, info.value.field_name) == ("train.jsonl", 7, None)


def test_no_trainable_token_after_truncation(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    with pytest.raises(DataError, match="no trainable token") as info:
        encode_example(_chat(system=True, turns=1), tiny_tokenizer, template="chatml", max_length=8)
    assert (info.value.line, info.value.field_name) == (7, "messages")


def test_no_assistant_turn_has_no_trainable_token(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    ex = Example("train.jsonl", 3, messages=(Message("user", USER_1),))
    with pytest.raises(DataError, match="no trainable token"):
        encode_example(ex, tiny_tokenizer, max_length=512)


@pytest.mark.parametrize("template", TEMPLATES)
def test_render_prompt_ends_with_generation_prefix(
    tiny_tokenizer: PreTrainedTokenizerFast, template: str
) -> None:
    ex = _chat(system=True, turns=2)
    prompt = render_prompt(ex.messages[:-1], tiny_tokenizer, template)
    assert prompt.endswith(GENERATION_PREFIX[template])
    full = render_prompt(ex.messages, tiny_tokenizer, template)
    assert full.startswith(prompt + TURN[template](ANSWER_2, tiny_tokenizer))


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("add_bos", [True, False])
def test_encoded_prompt_is_a_prefix_of_the_training_tokens(template: str, add_bos: bool) -> None:
    tok = make_tiny_tokenizer(add_bos=add_bos)
    ex = _chat(system=True, turns=2)
    prompt_ids = encode_prompt(ex.messages[:-1], tok, template)
    train_ids = encode_example(ex, tok, template=template, max_length=512).input_ids
    assert train_ids[: len(prompt_ids)] == prompt_ids
    assert prompt_ids[:2] != [tok.bos_token_id] * 2


@pytest.mark.parametrize("template", TEMPLATES)
def test_saved_template_string_reproduces_training(template: str) -> None:
    trained = make_tiny_tokenizer()
    served = make_tiny_tokenizer()
    served.chat_template = template_string(template, trained)
    ex = _chat(system=True, turns=2)
    assert encode_example(ex, served, max_length=512) == encode_example(
        ex, trained, template=template, max_length=512
    )


def test_template_strings(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    assert template_string("tokenizer", tiny_tokenizer) == SMOLLM2_CHAT_TEMPLATE
    for name, jinja in BUILTIN_TEMPLATES.items():
        assert template_string(name, tiny_tokenizer) == jinja
    with pytest.raises(ChatTemplateError, match="unknown chat template 'vicuna'"):
        template_string("vicuna", tiny_tokenizer)


def test_eos_is_appended_when_tokenizer_template_lacks_end_of_turn() -> None:
    tok = make_tiny_tokenizer(add_bos=False)
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}"
    )
    enc = encode_example(_chat(system=True, turns=2), tok, max_length=512)
    runs = [tok.decode(r) for r in _runs(enc)]
    assert runs == [f" {ANSWER_1}<|im_end|>", f" {ANSWER_2}<|im_end|>"]
    assert template_string("tokenizer", tok) == EOS_APPEND_PREAMBLE + tok.chat_template
    assert end_of_turn_text("tokenizer", tok) == tok.eos_token


def test_markers_missing_from_vocabulary_are_plain_text() -> None:
    tok = make_tiny_tokenizer(chat_tokens=False)
    assert "<|im_start|>" not in tok.get_vocab()
    size = len(tok)
    enc = encode_example(_chat(system=True, turns=2), tok, template="chatml", max_length=512)
    assert [tok.decode(r) for r in _runs(enc)] == [a + "<|im_end|>" for a in (ANSWER_1, ANSWER_2)]
    assert len(tok) == size  # no token was added


def test_inconsistent_template_is_named(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    tok = make_tiny_tokenizer()
    tok.chat_template = SMOLLM2_CHAT_TEMPLATE.replace("'<|im_start|>assistant\\n'", "'A: '")
    with pytest.raises(ChatTemplateError, match=r"'tokenizer'.*assistant turn"):
        encode_example(_chat(system=False, turns=1), tok, max_length=512)
    # train_on="all" needs no prefix consistency.
    assert encode_example(_chat(system=False, turns=1), tok, max_length=512, train_on="all")


@pytest.mark.parametrize(
    "messages",
    [
        (Message("user", "a"), Message("user", "b"), Message("assistant", "c")),
        (Message("assistant", "c"), Message("user", "d"), Message("assistant", "e")),
    ],
)
def test_conversation_the_template_refuses_is_a_data_error(
    tiny_tokenizer: PreTrainedTokenizerFast, messages: tuple[Message, ...]
) -> None:
    with pytest.raises(DataError, match="llama2") as info:
        ex = Example("t.jsonl", 2, messages=messages)
        encode_example(ex, tiny_tokenizer, template="llama2", max_length=512)
    assert info.value.field_name == "messages"


def test_slow_tokenizer_is_refused(
    tiny_tokenizer: PreTrainedTokenizerFast, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(type(tiny_tokenizer), "is_fast", property(lambda self: False))
    with pytest.raises(ChatTemplateError, match="fast"):
        encode_example(_chat(system=False, turns=1), tiny_tokenizer, max_length=512)
