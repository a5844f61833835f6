"""The pre-flight checks of dpo/reward (pairs), grpo/ppo (prompts) and classify (labels): each
passes on healthy records and catches its fault, naming the record."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from transformers import PreTrainedTokenizerFast

from tests.helpers.tiny_tokenizer import make_tiny_tokenizer
from tunesmith.checks import failures, preflight_labels, preflight_pairs, preflight_prompts
from tunesmith.checks.pairs import encode_sides, render_pairs
from tunesmith.checks.render import render_terminal
from tunesmith.data.labelled import LabelledText
from tunesmith.data.preference import PreferencePair, encode_pair
from tunesmith.data.prompts import read_prompts
from tunesmith.data.records import Message
from tunesmith.rewards.registry import Reward

REPO = Path(__file__).resolve().parents[2]


def _statuses(checks: list[Any]) -> dict[str, str]:
    return {c.name: c.status for c in checks}


def _detail(checks: list[Any], name: str) -> str:
    return next(c.detail for c in checks if c.name == name)


def _pair(i: int, chosen: str = "Yes, it is near.", rejected: str = "No, it is far.") -> Any:
    return PreferencePair((Message("user", f"Is the sea near {i}?"),), chosen, rejected, "p", i)


def _pairs_cfg(method: str = "dpo", max_length: int = 128) -> Any:
    """Only what the pair checks read of a dpo/reward config."""
    data = SimpleNamespace(template="tokenizer", max_length=max_length)
    return SimpleNamespace(method=method, data=data)


# ----------------------------------------------------------------------------- pairs


def test_good_pairs_pass_every_check(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    checks = preflight_pairs([_pair(i) for i in range(1, 6)], tiny_tokenizer, _pairs_cfg())
    assert _statuses(checks) == {
        name: "PASS"
        for name in (
            "pair-rejects",
            "prompt-match",
            "identical",
            "empty-reply",
            "end-of-turn",
            "bos",
            "template",
            "truncation",
        )
    }
    assert failures(checks) == []


def test_rejected_rows_warn_and_no_pair_left_fails(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    rejects = [{"source": "p", "line": 7, "rule": "identical"}]
    checks = preflight_pairs([_pair(1)], tiny_tokenizer, _pairs_cfg(), rejects=rejects)
    assert _statuses(checks)["pair-rejects"] == "WARN"
    assert "1 identical (p:7)" in _detail(checks, "pair-rejects")
    none = preflight_pairs([], tiny_tokenizer, _pairs_cfg(), rejects=rejects)
    assert failures(none) == ["pair-rejects: no usable pair: all 1 rows rejected"]


def test_replies_identical_after_truncation_fail(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    common = "Yes, the sea is near the sun and the wind and the dog " * 3
    pairs = [_pair(1), _pair(2, common + "today.", common + "tomorrow.")]
    checks = preflight_pairs(pairs, tiny_tokenizer, _pairs_cfg(max_length=96))
    assert _statuses(checks)["identical"] == "FAIL"
    assert "1 of 2 pairs" in _detail(checks, "identical") and "p:2" in _detail(checks, "identical")
    assert _statuses(preflight_pairs(pairs, tiny_tokenizer, _pairs_cfg()))["identical"] == "PASS"


def test_a_prompt_rendered_differently_before_the_reply_fails(
    tiny_tokenizer: PreTrainedTokenizerFast,
) -> None:
    """A template whose prompt text depends on what follows (here: the number of turns)."""
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = (
        "{{ 'turns: ' + (messages|length)|string + '\\n' }}"
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
        "'<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    checks = preflight_pairs([_pair(1)], tok, _pairs_cfg())
    assert _statuses(checks)["prompt-match"] == "FAIL"
    detail = _detail(checks, "prompt-match")
    assert "p:1" in detail and "before the chosen reply" in detail and "'1" in detail


def test_per_side_encoding_cuts_the_prompt_differently(
    tiny_tokenizer: PreTrainedTokenizerFast,
) -> None:
    """Encoding each reply on its own (a reward model's way) cuts a long prompt by the length of
    that reply: the two sides no longer share a prompt. One joint encoding keeps it shared."""
    pair = _pair(1, "Yes, the sea is near the sun and the wind. " * 4, "No.")
    per_side = preflight_pairs([pair], tiny_tokenizer, _pairs_cfg("reward", max_length=80))
    assert _statuses(per_side)["prompt-match"] == "FAIL"
    assert "p:1: chosen has 40 prompt tokens" in _detail(per_side, "prompt-match")
    joint = preflight_pairs([pair], tiny_tokenizer, _pairs_cfg("reward", 80), per_side=False)
    assert _statuses(joint)["prompt-match"] == "PASS"


def test_encodings_given_by_the_method_are_checked(
    tiny_tokenizer: PreTrainedTokenizerFast,
) -> None:
    pairs = [_pair(1), _pair(2)]
    good = [encode_pair(p, tiny_tokenizer, "tokenizer", 128) for p in pairs]
    unclosed = dataclasses.replace(good[0], chosen_ids=good[0].chosen_ids[:-1])  # drop <|im_end|>
    empty = dataclasses.replace(good[1], rejected_ids=[])
    checks = preflight_pairs(pairs, tiny_tokenizer, _pairs_cfg(), encoded=[unclosed, empty])
    status = _statuses(checks)
    assert status["end-of-turn"] == "FAIL" and "p:1 chosen" in _detail(checks, "end-of-turn")
    assert status["empty-reply"] == "FAIL" and "p:2 rejected" in _detail(checks, "empty-reply")
    assert _statuses(preflight_pairs(pairs, tiny_tokenizer, _pairs_cfg(), encoded=good)) == (
        _statuses(preflight_pairs(pairs, tiny_tokenizer, _pairs_cfg()))
    )


def test_rendered_pairs_mark_the_replies(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    sides = encode_sides([_pair(1)], tiny_tokenizer, _pairs_cfg())
    chosen, rejected = render_pairs(sides, tiny_tokenizer, 1)
    assert chosen.name == "p:1 chosen" and rejected.name == "p:1 rejected"
    text = render_terminal(chosen, color=False)
    assert "Is the sea near 1?" in text and "[[Yes, it is near.<|im_end|>]]" in text
    assert "[[No, it is far.<|im_end|>]]" in render_terminal(rejected, color=False)


# ----------------------------------------------------------------------------- prompts


def _records(tmp_path: Path, tokenizer: Any, n: int = 3) -> Any:
    rows = [{"prompt": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(n)]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return read_prompts([str(path)], tokenizer)


def _grpo_cfg(max_new_tokens: int = 16, stop: tuple[str, ...] = (), rewards: Any = ()) -> Any:
    """Only what the prompt checks read of a grpo config."""
    return SimpleNamespace(
        method="grpo",
        data=SimpleNamespace(template="tokenizer", max_prompt_length=512),
        grpo=SimpleNamespace(max_new_tokens=max_new_tokens, stop=list(stop)),
        rewards=list(rewards),
    )


def _spec(name: str) -> Any:
    return SimpleNamespace(name=name, key=name, args={}, weight=1.0)


def test_good_prompts_pass_and_builtin_rewards_score(
    tmp_path: Path, tiny_tokenizer: PreTrainedTokenizerFast
) -> None:
    records = _records(tmp_path, tiny_tokenizer)
    cfg = _grpo_cfg(rewards=[_spec("math"), _spec("format")])
    checks = preflight_prompts(records, tiny_tokenizer, cfg, context_length=512)
    assert _statuses(checks) == dict.fromkeys(
        ("gen-prompt", "bos", "stop", "context", "rewards"), "PASS"
    )
    assert "'<|im_start|>assistant\\n'" in _detail(checks, "gen-prompt")
    assert "math 0..1" in _detail(checks, "rewards")


def _raises(prompts: list[str], completions: list[str], **f: Any) -> list[float]:
    if any(not c for c in completions):
        raise ValueError("cannot score an empty completion")
    return [1.0] * len(completions)


def _nan(prompts: list[str], completions: list[str], **f: Any) -> list[float]:
    return [math.nan] * len(completions)


def _short(prompts: list[str], completions: list[str], **f: Any) -> list[float]:
    return [0.0]


@pytest.mark.parametrize(
    ("fn", "says"),
    [
        (_raises, "raised ValueError"),
        (_nan, "returned nan"),
        (_short, "returned 1 scores for 9 completions"),
    ],
)
def test_a_broken_reward_fails_naming_function_and_example(
    tmp_path: Path, tiny_tokenizer: PreTrainedTokenizerFast, fn: Any, says: str
) -> None:
    records = _records(tmp_path, tiny_tokenizer)
    rewards = [Reward("math", lambda p, c, **f: [0.0] * len(c)), Reward("broken", fn)]
    checks = preflight_prompts(records, tiny_tokenizer, _grpo_cfg(), rewards=rewards)
    assert _statuses(checks)["rewards"] == "FAIL"
    detail = _detail(checks, "rewards")
    assert "1 of 2 reward function(s)" in detail and "reward 'broken'" in detail and says in detail
    if fn is _raises:
        assert "prompts.jsonl:1, completion ''" in detail


def test_an_unknown_reward_name_fails(
    tmp_path: Path, tiny_tokenizer: PreTrainedTokenizerFast
) -> None:
    records = _records(tmp_path, tiny_tokenizer)
    checks = preflight_prompts(records, tiny_tokenizer, _grpo_cfg(rewards=[_spec("nope:fn")]))
    assert failures(checks) and "cannot import module 'nope'" in _detail(checks, "rewards")


def test_context_and_budget(tmp_path: Path, tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    records = _records(tmp_path, tiny_tokenizer)
    longest = max(len(r.prompt_ids) for r in records)
    checks = preflight_prompts(records, tiny_tokenizer, _grpo_cfg(16), context_length=longest + 15)
    assert _statuses(checks)["context"] == "FAIL"
    assert f"{longest} tokens" in _detail(checks, "context")
    fits = preflight_prompts(records, tiny_tokenizer, _grpo_cfg(16), context_length=longest + 16)
    assert _statuses(fits)["context"] == "PASS"
    assert _statuses(preflight_prompts(records, tiny_tokenizer, _grpo_cfg()))["context"] == "SKIP"
    zero = preflight_prompts(records, tiny_tokenizer, _grpo_cfg(max_new_tokens=0))
    assert "nothing is generated" in _detail(zero, "stop")


def test_stop_needs_an_end_of_turn_generation_knows(tmp_path: Path) -> None:
    """Without chat tokens '<|im_end|>' is several plain tokens: generation would not stop at
    it unless it is a stop string."""
    tok = make_tiny_tokenizer(chat_tokens=False)
    records = _records(tmp_path, tok)
    checks = preflight_prompts(records, tok, _grpo_cfg())
    assert _statuses(checks)["stop"] == "FAIL" and "'<|im_end|>'" in _detail(checks, "stop")
    ok = preflight_prompts(records, tok, _grpo_cfg(stop=("<|im_end|>",)))
    assert _statuses(ok)["stop"] == "PASS" and "stop string" in _detail(ok, "stop")


def test_a_template_without_assistant_header_fails(
    tmp_path: Path, tiny_tokenizer: PreTrainedTokenizerFast
) -> None:
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
        "'<|im_end|>\\n' }}{% endfor %}"
    )
    checks = preflight_prompts(_records(tmp_path, tok), tok, _grpo_cfg())
    assert _statuses(checks)["gen-prompt"] == "FAIL"
    assert "prompts.jsonl:1" in _detail(checks, "gen-prompt")


# ----------------------------------------------------------------------------- labels


def _texts(labels: list[str], text: str = "a refund please") -> list[LabelledText]:
    return [LabelledText("t", i + 1, f"{text} {i}", label) for i, label in enumerate(labels)]


def _labels_cfg(max_length: int = 64) -> Any:
    return SimpleNamespace(method="classify", data=SimpleNamespace(max_length=max_length))


def test_good_labels_pass_and_show_the_distribution(
    tiny_tokenizer: PreTrainedTokenizerFast,
) -> None:
    train, held = _texts(["a", "b", "a", "b", "a"]), _texts(["b", "a"])
    checks = preflight_labels(train, held, tiny_tokenizer, _labels_cfg(), pad_id=1)
    assert _statuses(checks) == dict.fromkeys(
        ("labels", "unseen-labels", "rare-labels", "truncation", "padding"), "PASS"
    )
    assert "train: a 3, b 2; held-out: b 1, a 1" in _detail(checks, "labels")


def test_label_faults(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    train, held = _texts(["a", "b", "a", "b", "c"]), _texts(["a", "z", "y"])
    checks = preflight_labels(train, held, tiny_tokenizer, _labels_cfg())
    status = _statuses(checks)
    assert status["unseen-labels"] == "FAIL" and status["rare-labels"] == "WARN"
    assert "['y', 'z']" in _detail(checks, "unseen-labels")
    assert "t:2" in _detail(checks, "unseen-labels")
    assert "['c']" in _detail(checks, "rare-labels")
    one = preflight_labels(_texts(["a", "a"]), [], tiny_tokenizer, _labels_cfg())
    assert _statuses(one)["labels"] == "FAIL"


def test_truncated_texts_and_the_pad_token(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    long = _texts(["a", "b"] * 3, text="the quick brown fox jumps over the lazy dog " * 4)
    checks = preflight_labels(long, [], tiny_tokenizer, _labels_cfg(max_length=12))
    assert _statuses(checks)["truncation"] == "WARN"
    assert "6 of 6 texts longer than max_length 12" in _detail(checks, "truncation")
    padded = _texts(["a", "b"], text="hello <|im_end|> there")
    pad = tiny_tokenizer.pad_token_id
    checks = preflight_labels(padded, [], tiny_tokenizer, _labels_cfg(), pad_id=pad)
    assert _statuses(checks)["padding"] == "FAIL" and "t:1, t:2" in _detail(checks, "padding")


# ----------------------------------------------------------------------------- layering


def test_the_checks_package_imports_no_method() -> None:
    modules = sorted(p.stem for p in (REPO / "src/tunesmith/checks").glob("*.py"))
    assert {"pairs", "prompts", "labels", "method_doctor", "report"} <= set(modules)
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module('tunesmith.checks' + ('' if m == '__init__' else '.' + m))\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('tunesmith.methods'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
