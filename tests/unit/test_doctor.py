"""Unit tests for tunesmith.checks: each check passes on healthy input and catches its fault."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from tests.helpers.tiny_tokenizer import make_tiny_tokenizer
from tunesmith.checks.checks import (
    check_bos,
    check_end_of_turn,
    check_padding,
    check_padding_side,
    trained_spans,
)
from tunesmith.checks.lengths import check_lengths, full_lengths, length_stats
from tunesmith.checks.model_checks import check_packing_isolation
from tunesmith.checks.preflight import (
    PreflightError,
    check_template,
    check_truncation,
    saved_tokenizer,
)
from tunesmith.checks.render import render_terminal, rendered
from tunesmith.config import DataSection
from tunesmith.data.dataset import PreparedData, Split, collate
from tunesmith.data.packing import collate_packed
from tunesmith.data.records import Example, Message
from tunesmith.data.templates import IGNORE_INDEX, TEMPLATES, Encoded, encode_example
from tunesmith.report.doctor_page import HtmlReport, render_html


def _chat(i: int, turns: int = 1) -> Example:
    msgs: list[Message] = []
    for t in range(turns):
        msgs += [Message("user", f"What is {i} plus {t}?"), Message("assistant", f"It is {i + t}.")]
    return Example(source="d.jsonl", line=i + 1, messages=tuple(msgs))


def _encoded(tok: Any, n: int = 4, **kw: Any) -> list[Encoded]:
    """Real encodings of one- and two-turn chats."""
    return [encode_example(_chat(i, turns=1 + i % 2), tok, max_length=256, **kw) for i in range(n)]


def _data(encoded: list[Encoded], rejects: list[dict[str, Any]] | None = None) -> PreparedData:
    examples = [_chat(i) for i in range(len(encoded))]
    rejects = rejects or []
    stats = {"train_rejected": sum(r["stage"] == "encode:train" for r in rejects)}
    return PreparedData(Split(examples, encoded), Split(), rejects, stats)


def test_trained_spans() -> None:
    x = IGNORE_INDEX
    assert trained_spans([x, 5, 6, x, x, 7]) == [(1, 3), (5, 6)]
    assert trained_spans([x, x]) == []


# ----------------------------------------------------------------------------- 1. end of turn


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("train_on", ["assistant", "all"])
def test_end_of_turn_passes_on_real_encodings(
    tiny_tokenizer: PreTrainedTokenizerFast, template: str, train_on: str
) -> None:
    check = check_end_of_turn(
        _encoded(tiny_tokenizer, train_on=train_on, template=template), tiny_tokenizer, template
    )
    assert check.status == "PASS", check.detail


def test_end_of_turn_fails_when_a_reply_is_not_closed(
    tiny_tokenizer: PreTrainedTokenizerFast,
) -> None:
    enc = _encoded(tiny_tokenizer)
    last = max(i for i, lab in enumerate(enc[1].labels) if lab != IGNORE_INDEX)
    enc[1].labels[last] = IGNORE_INDEX  # the EOS is no longer trained
    check = check_end_of_turn(enc, tiny_tokenizer, "tokenizer", names=["a", "b", "c", "d"])
    assert check.status == "FAIL" and "b ends" in check.detail and "1 of 6" in check.detail


def test_end_of_turn_ignores_the_cut_reply_of_a_truncated_example(
    tiny_tokenizer: PreTrainedTokenizerFast,
) -> None:
    enc = encode_example(_chat(3), tiny_tokenizer, max_length=62)
    assert enc.truncated and enc.labels[-1] != IGNORE_INDEX
    check = check_end_of_turn([enc, *_encoded(tiny_tokenizer, 1)], tiny_tokenizer, "tokenizer")
    assert check.status == "PASS" and "all 1 " in check.detail


def test_end_of_turn_multi_token_marker_warns() -> None:
    tok = make_tiny_tokenizer(chat_tokens=False)  # <|im_end|> is plain text here
    check = check_end_of_turn(_encoded(tok, template="chatml"), tok, "chatml")
    assert check.status == "WARN" and "stop string" in check.detail


# ----------------------------------------------------------------------------- 2. BOS


def test_bos_pass_and_doubled_bos_from_data_fails() -> None:
    tok = make_tiny_tokenizer(add_bos=True)
    healthy = _encoded(tok)
    assert check_bos(healthy, tok).status == "PASS"
    # Text that already starts with the BOS text, plus the tokenizer's own BOS.
    text = Example(source="t.jsonl", line=1, text="<s>The quick brown fox.")
    doubled = encode_example(text, tok, max_length=64)
    assert doubled.input_ids[:2] == [tok.bos_token_id] * 2
    check = check_bos([*healthy, doubled], tok, names=["a", "b", "c", "d", "t.jsonl:1"])
    assert check.status == "FAIL" and "t.jsonl:1" in check.detail
    bos = tok.bos_token_id
    assert check_bos(healthy, tok, prompt_ids=[bos, bos, 5]).status == "FAIL"
    assert check_bos([healthy[0], Encoded([5, 6], [5, 6], 2, False)], tok).status == "WARN"


# ----------------------------------------------------------------------------- 3, 4. padding


def test_padding_pass_when_pad_equals_eos(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    enc = _encoded(tiny_tokenizer)
    assert tiny_tokenizer.pad_token_id == tiny_tokenizer.eos_token_id
    rows = [[e] for e in enc]
    batch = collate(enc, tiny_tokenizer.pad_token_id)
    check = check_padding(batch, rows, tiny_tokenizer, packed=False)
    assert check.status == "PASS" and "pad == eos" in check.detail
    assert check_padding_side(batch, rows, tiny_tokenizer, packed=False).status == "PASS"


def test_padding_faults_are_caught(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    enc, pad = _encoded(tiny_tokenizer), tiny_tokenizer.pad_token_id
    rows = [[e] for e in enc]
    short = min(range(len(enc)), key=lambda i: len(enc[i].input_ids))
    n = len(enc[short].input_ids)

    labelled = collate(enc, pad)
    labelled["labels"][short, n:] = pad  # padding trained as EOS
    assert (
        "padding positions carry labels"
        in check_padding(labelled, rows, tiny_tokenizer, False).detail
    )

    by_id = collate(enc, pad)
    by_id["labels"][by_id["input_ids"] == pad] = IGNORE_INDEX  # the classic pad == eos bug
    check = check_padding(by_id, rows, tiny_tokenizer, False)
    assert check.status == "FAIL" and "trained EOS is masked" in check.detail

    attended = collate(enc, pad)
    attended["attention_mask"][short, n:] = 1
    assert check_padding(attended, rows, tiny_tokenizer, False).status == "FAIL"
    assert check_padding_side(attended, rows, tiny_tokenizer, False).status == "FAIL"


def test_packed_padding(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    enc, pad = _encoded(tiny_tokenizer), tiny_tokenizer.pad_token_id
    rows = [enc[:3], enc[3:]]
    batch = collate_packed(rows, pad)
    assert check_padding(batch, rows, tiny_tokenizer, packed=True).status == "PASS"
    assert check_padding_side(batch, rows, tiny_tokenizer, packed=True).status == "PASS"
    batch["labels"][1, -1] = 7
    assert check_padding(batch, rows, tiny_tokenizer, packed=True).status == "FAIL"


# ----------------------------------------------------------------------------- 5. template


@pytest.mark.parametrize("template", TEMPLATES)
def test_template_round_trip_passes(tiny_tokenizer: PreTrainedTokenizerFast, template: str) -> None:
    check = check_template(tiny_tokenizer, template, _chat(1, turns=2).messages)
    assert check.status == "PASS", check.detail


def test_template_mismatch_and_missing_template_fail(
    tiny_tokenizer: PreTrainedTokenizerFast,
) -> None:
    # Serving with the base tokenizer (SmolLM2's template) a model trained with chatml.
    check = check_template(tiny_tokenizer, "chatml", _chat(1).messages, served=tiny_tokenizer)
    assert check.status == "FAIL" and "renders differently" in check.detail
    bare = make_tiny_tokenizer()
    bare.chat_template = None
    check = check_template(bare, "tokenizer", _chat(1).messages)
    assert check.status == "FAIL" and "no chat_template" in check.detail


def test_saved_tokenizer_leaves_the_original_alone(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    before = tiny_tokenizer.chat_template
    assert saved_tokenizer(tiny_tokenizer, "{{ 'x' }}").chat_template == "{{ 'x' }}"
    assert tiny_tokenizer.chat_template == before


# ----------------------------------------------------------------------------- 6, 8. lengths


def test_truncation_shares(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    enc = _encoded(tiny_tokenizer, 20)
    assert check_truncation(_data(enc)).status == "PASS"
    cut = encode_example(_chat(3), tiny_tokenizer, max_length=62)
    assert check_truncation(_data([*enc, cut, cut])).status == "WARN"
    reject = {"stage": "encode:train", "reason": "no trainable token within max_length"}
    check = check_truncation(_data([], [reject]))
    assert check.status == "FAIL" and "no usable" in check.detail


def test_length_stats(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    stats = length_stats(list(range(1, 101)), max_length=90)
    assert (stats.percentile(50), stats.percentile(95), stats.over) == (50, 95, 10)
    assert check_lengths(stats).status == "WARN"
    assert "p95 95" in stats.summary() and sum(c for *_, c in stats.histogram()) == 100
    assert check_lengths(length_stats([5, 6], 90)).status == "PASS"
    cut = encode_example(_chat(3), tiny_tokenizer, max_length=62)
    full = encode_example(_chat(3), tiny_tokenizer, max_length=999)
    dropped = {"stage": "encode:train", "reason": "130 tokens > max_length 62"}
    data = PreparedData(Split([_chat(3)], [cut]), Split(), [dropped], {})
    cfg = DataSection(train="x.jsonl", max_length=62)
    assert full_lengths(data, tiny_tokenizer, cfg) == [len(full.input_ids), 130]


# ----------------------------------------------------------------------------- 7. packing


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_gemma"])
def test_packing_isolation(arch: str, request: pytest.FixtureRequest) -> None:
    tok = make_tiny_tokenizer()
    model_dir = request.getfixturevalue(arch)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    enc = _encoded(tok)
    cpu = torch.device("cpu")
    check = check_packing_isolation(model, enc, tok.pad_token_id, cpu, "fp32")
    assert check.status == "PASS", check.detail

    class IgnoresMask(torch.nn.Module):
        """A model call that drops the packed mask and positions: examples see each other."""

        def __init__(self) -> None:
            super().__init__()
            self.inner, self.config = model, model.config

        def forward(self, input_ids: torch.Tensor, **_: Any) -> Any:
            return self.inner(input_ids=input_ids)

    leaky = check_packing_isolation(IgnoresMask(), enc, tok.pad_token_id, cpu, "fp32")
    assert leaky.status == "FAIL", leaky.detail
    assert check_packing_isolation(model, enc[:1], tok.pad_token_id, cpu, "fp32").status == "SKIP"


# ----------------------------------------------------------------------------- rendering, errors


def test_render_terminal_and_html(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    ex = rendered(_encoded(tiny_tokenizer, 1)[0], tiny_tokenizer, "d.jsonl:1")
    plain = render_terminal(ex, color=False)
    assert "[[It is 0.<|im_end|>]]↵" in plain and "\x1b[" not in plain
    coloured = render_terminal(ex, color=True)
    assert "\x1b[30;42m" in coloured and "[[" not in coloured
    page = render_html(HtmlReport("t", {"model": "m"}, [], [ex]))
    assert '<span class="tok tr" title="#' in page and "&lt;|im_end|&gt;" in page


def test_preflight_error_names_the_way_out() -> None:
    err = PreflightError(["bos: doubled"])
    assert "FAIL bos: doubled" in str(err) and "--skip-preflight" in str(err)
    assert isinstance(err, ValueError) and err.failures == ["bos: doubled"]
