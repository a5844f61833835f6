"""The sampling engine on tiny random models: greedy parity, padding, stops, seeds, groups."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tunesmith.generation import (
    SamplingParams,
    filter_logits,
    generate_ids,
    sample,
)
from tunesmith.models.load import load_tokenizer


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    """Decoding runs many tiny ops: one thread is several times faster on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=["llama", "gemma"])
def lm(request: pytest.FixtureRequest) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM

    path: Path = request.getfixturevalue(f"tiny_{request.param}")
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    return model.eval(), load_tokenizer(path)


def _prompts(tok: Any) -> list[list[int]]:
    texts = ["Hello there, how are", "One", "The quick brown fox jumps over the lazy"]
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_greedy_sample_matches_generate_ids(lm: tuple[Any, Any]) -> None:
    model, tok = lm
    params = SamplingParams(max_new_tokens=12)
    got = sample(model, tok, _prompts(tok), params)
    want = generate_ids(model, tok, _prompts(tok), params)
    assert [c.text.strip() for c in got] == want
    assert all(len(c.token_ids) <= 12 for c in got)


def test_left_padding_gives_the_unpadded_continuation(lm: tuple[Any, Any]) -> None:
    model, tok = lm
    params = SamplingParams(max_new_tokens=10)
    batched = sample(model, tok, _prompts(tok), params)
    for i, prompt in enumerate(_prompts(tok)):
        alone = sample(model, tok, [prompt], params)[0]
        assert alone.token_ids == batched[i].token_ids


def test_token_ids_match_a_plain_greedy_loop(lm: tuple[Any, Any]) -> None:
    model, tok = lm
    prompt = _prompts(tok)[0]
    ids = torch.tensor([prompt])
    want = []
    with torch.no_grad():
        for _ in range(6):
            nxt = int(model(input_ids=ids).logits[0, -1].argmax())
            want.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    got = sample(model, tok, [prompt], SamplingParams(max_new_tokens=6))[0]
    # a plain loop does not stop at end-of-turn; compare up to the sampled length
    assert got.token_ids == want[: len(got.token_ids)]
    if got.finish_reason == "length":
        assert len(got.token_ids) == 6


def test_groups_are_prompt_major_with_seeded_determinism(lm: tuple[Any, Any]) -> None:
    model, tok = lm
    params = SamplingParams(max_new_tokens=8, temperature=1.0, seed=7)
    a = sample(model, tok, _prompts(tok), params, num_samples=4, batch_size=5)
    b = sample(model, tok, _prompts(tok), params, num_samples=4, batch_size=5)
    assert [c.prompt_index for c in a] == [0] * 4 + [1] * 4 + [2] * 4
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    # a random model at temperature 1 does not repeat itself across 4 draws of 8 tokens
    assert len({tuple(c.token_ids) for c in a[:4]}) > 1
    c = sample(model, tok, _prompts(tok), SamplingParams(8, 1.0, seed=8), num_samples=4)
    assert [x.token_ids for x in c] != [x.token_ids for x in a]


def test_stop_string_cuts_text_and_ends_only_that_row(lm: tuple[Any, Any]) -> None:
    model, tok = lm
    prompts = _prompts(tok)
    free = sample(model, tok, prompts, SamplingParams(max_new_tokens=16))
    text = free[0].text
    assert len(text) > 4, "the tiny model should produce some text"
    stop = text[2:4]  # a string the first row produces early
    cut = sample(model, tok, prompts, SamplingParams(max_new_tokens=16, stop=(stop,)))
    assert cut[0].finish_reason == "stop"
    assert cut[0].text == text[: text.find(stop)]
    assert len(cut[0].token_ids) < len(free[0].token_ids)
    for f, c in zip(free[1:], cut[1:], strict=True):  # other rows run on unless they hit it too
        if stop not in f.text:
            assert c.token_ids == f.token_ids


def test_stops_on_end_of_turn_and_keeps_that_token() -> None:
    class Scripted(torch.nn.Module):
        """Emits token 5, 6, then eos (id 2) whatever the input."""

        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.script = [5, 6, 2, 7]
            self.training = False

        def forward(self, input_ids: torch.Tensor, **_: Any) -> Any:
            step = input_ids.size(1) if _.get("cache") is None else None
            self.t = 0 if step is not None else self.t + 1
            logits = torch.zeros(input_ids.size(0), input_ids.size(1), 10)
            logits[:, -1, self.script[self.t]] = 1.0
            return type("Out", (), {"logits": logits, "cache": object()})()

    class Tok:
        pad_token_id, eos_token_id, unk_token_id = 0, 2, 3

        def convert_tokens_to_ids(self, _: str) -> int:
            return 3

        def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
            return "".join(f"<{i}>" for i in ids if not (skip_special_tokens and i == 2))

    got = sample(Scripted(), Tok(), [[1, 1]], SamplingParams(max_new_tokens=10))[0]
    assert got.token_ids == [5, 6, 2] and got.finish_reason == "stop"
    assert got.text == "<5><6>"
    short = sample(Scripted(), Tok(), [[1]], SamplingParams(max_new_tokens=2))[0]
    assert short.token_ids == [5, 6] and short.finish_reason == "length"


def test_filter_logits_top_k_and_top_p() -> None:
    # probs of logits log([0.5, 0.3, 0.15, 0.05]): nucleus 0.7 keeps 0.5 + 0.3 (0.5 < 0.7)
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(filter_logits(logits, top_p=0.7))
    assert kept.tolist() == [[True, True, False, False]]
    kept = torch.isfinite(filter_logits(logits, top_p=0.5))  # 0.5 alone reaches 0.5
    assert kept.tolist() == [[True, False, False, False]]
    kept = torch.isfinite(filter_logits(logits[:, [3, 1, 0, 2]], top_k=2))
    assert kept.tolist() == [[False, True, True, False]]
