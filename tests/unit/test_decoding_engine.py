"""The decoding engine: continuous batching and shared-prompt groups change no row's output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tunesmith.decoding import Engine, Request, SamplingParams, eos_ids
from tunesmith.generation import model_engine_forward, sample
from tunesmith.models.load import load_tokenizer


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
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


def _engine(model: Any, tok: Any, slots: int, share: bool = True) -> Engine:
    decode = lambda ids: tok.decode(ids, skip_special_tokens=True)  # noqa: E731
    return Engine(model_engine_forward(model), decode, set(), slots, share_prefix=share)


def _prompts(tok: Any) -> list[list[int]]:
    texts = ["Hello there, how are", "One", "The quick brown fox jumps over the lazy dog " * 6]
    texts += ["A b c", "Why is the sky"]
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


@torch.no_grad()
def test_continuous_batching_gives_each_row_its_greedy_tokens_alone(lm: tuple[Any, Any]) -> None:
    """5 prompts (one past gemma's 64-token window), budgets 3..40, 2 slots: rows leave early
    and waiting ones join a running batch of another length; each row equals decoding alone."""
    model, tok = lm
    budgets = [3, 40, 25, 7, 30]
    requests = [
        Request(p, SamplingParams(max_new_tokens=n), seed=0)
        for p, n in zip(_prompts(tok), budgets, strict=True)
    ]
    engine = _engine(model, tok, slots=2)
    together = engine.run(requests)
    assert engine.idle and engine._cache is None
    for request, row in zip(requests, together, strict=True):
        alone = _engine(model, tok, slots=1).run([Request(request.prompt_ids, request.params)])
        assert row.tokens == alone[0].tokens
        assert len(row.tokens) == request.params.max_new_tokens  # no EOS set: full budgets


@torch.no_grad()
def test_a_request_joins_the_running_batch_at_the_next_step(lm: tuple[Any, Any]) -> None:
    model, tok = lm
    engine = _engine(model, tok, slots=4)
    first = Request(_prompts(tok)[0], SamplingParams(max_new_tokens=6))
    engine.add(first)
    engine.step()
    engine.step()
    assert len(engine.rows) == 1
    late = Request(_prompts(tok)[2], SamplingParams(max_new_tokens=6))
    engine.add(late)
    engine.step()
    assert len(engine.rows) == 2  # joined while the first row is still decoding
    while not engine.idle:
        engine.step()


@torch.no_grad()
def test_shared_prompt_groups_equal_unshared_sampling(lm: tuple[Any, Any]) -> None:
    """G=4 samples of a prompt from one prefill (rows repeated) draw the same tokens as 4
    separate prefills, for fixed seeds; 3 slots, so one sample joins after others finish."""
    model, tok = lm
    params = SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.9, top_k=20)

    def run(share: bool) -> list[list[int]]:
        reqs = [Request(p, params, seed=11 + i, num_samples=4) for i, p in enumerate(_prompts(tok))]
        return [r.tokens for r in _engine(model, tok, 3, share).run(reqs[:3])]

    shared = run(True)
    assert shared == run(False)
    assert len({tuple(t) for t in shared[:4]}) > 1  # the samples of one group differ


@torch.no_grad()
def test_stop_strings_and_eos_end_only_their_row(lm: tuple[Any, Any]) -> None:
    model, tok = lm
    free = sample(model, tok, _prompts(tok), SamplingParams(max_new_tokens=12))
    stop = free[0].text[3:6]
    stopped = SamplingParams(max_new_tokens=12, stop=(stop,))
    cut = sample(model, tok, _prompts(tok), stopped, 1, 2)
    assert cut[0].text == free[0].text[: free[0].text.find(stop)]
    assert cut[0].finish_reason == "stop"
    for f, c in zip(free[1:], cut[1:], strict=True):
        if stop not in f.text:
            assert c.token_ids == f.token_ids
    end = free[1].token_ids[2]  # made an end-of-turn token: row 1 ends at its first one
    first = free[1].token_ids.index(end)
    eos = set(eos_ids(tok)) | {end}
    decode = lambda ids: tok.decode(ids, skip_special_tokens=True)  # noqa: E731
    engine = Engine(model_engine_forward(model), decode, eos, 2)
    rows = engine.run([Request(p, SamplingParams(max_new_tokens=12)) for p in _prompts(tok)])
    assert rows[1].tokens == free[1].token_ids[: first + 1] and rows[1].finish_reason == "stop"
