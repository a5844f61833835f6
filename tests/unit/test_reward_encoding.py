"""Reward-model training encodes each pair once (both replies after one prompt)."""

from __future__ import annotations

from typing import Any


def test_a_truncated_pair_scores_both_replies_on_one_prompt(tiny_tokenizer_no_bos: Any) -> None:
    """The pair is encoded once, so cutting a long prompt cuts it the same for both sides."""
    from types import SimpleNamespace

    from tunesmith.data.preference import PreferencePair
    from tunesmith.data.records import Message
    from tunesmith.methods.reward import encode_pairs

    prompt = (Message("user", " ".join(f"word{i}" for i in range(60))),)
    pair = PreferencePair(prompt, "short", "a much longer rejected reply " * 4, "p.jsonl", 1)
    rm = SimpleNamespace(
        kind="decoder", tokenizer=tiny_tokenizer_no_bos, template="chatml", max_length=64
    )
    got = encode_pairs(rm, [pair])  # type: ignore[arg-type]
    enc = got.encoded[0]
    assert enc.truncated
    n = len(enc.prompt_ids)
    assert got.chosen[0]["input_ids"][:n] == got.rejected[0]["input_ids"][:n] == enc.prompt_ids
    assert max(len(got.chosen[0]["input_ids"]), len(got.rejected[0]["input_ids"])) <= 64
