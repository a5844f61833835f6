"""Issue 15's equality test: one prompt, seed and settings give the same text through ``eval``,
``generate``/``chat``, ``serve`` and a GRPO rollout, all on the one decoding engine, with a
stop string honoured on every path."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.serve.lora_util import KEY, Served
from tunesmith.data.records import Message
from tunesmith.data.templates import encode_prompt
from tunesmith.generation import SamplingParams, chat_replies, derive_seed, sample
from tunesmith.models.load import load_tokenizer

USER = "Tell me a story about a fox"
TRAIN_SEED, ROUND, POSITION = 3, 5, 0  # GRPO seeds prompt k of round s: derive_seed(seed, s, k)
SEED = derive_seed(TRAIN_SEED, ROUND, POSITION)
SETTINGS = {"max_new_tokens": 16, "temperature": 0.9, "top_p": 0.95, "top_k": 40}


@pytest.fixture(scope="module")
def lm(tiny_llama: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32)
    return model.eval(), load_tokenizer(tiny_llama)


def _params(stop: tuple[str, ...] = ()) -> SamplingParams:
    return SamplingParams(**SETTINGS, seed=SEED, stop=stop)


def _generate(lm: tuple[Any, Any], stop: tuple[str, ...]) -> str:
    """``tunesmith generate`` / ``chat`` / the API: :func:`chat_replies`."""
    model, tok = lm
    return chat_replies(model, tok, [[Message("user", USER)]], _params(stop))[0]


def _grpo(lm: tuple[Any, Any], stop: tuple[str, ...]) -> tuple[str, list[str]]:
    """GRPO's rollout call: 4 samples of the prompt (one shared prefill), its round seed, a
    batch of 3 rows; sample 0 draws from derive_seed(seed, 0) like every single request."""
    model, tok = lm
    prompt = encode_prompt([Message("user", USER)], tok)
    params = SamplingParams(**SETTINGS, stop=stop)
    comps = sample(model, tok, [prompt], params, num_samples=4, batch_size=3, seeds=[SEED])
    return comps[0].text.strip(), [c.text for c in comps]


def _eval(lm: tuple[Any, Any], stop: tuple[str, ...], tmp: Path) -> str:
    from tunesmith.eval.runner import run_suite
    from tunesmith.eval.suite import load_suite

    row = {"messages": [{"role": "user", "content": USER}, {"role": "assistant", "content": "x"}]}
    (tmp / "d.jsonl").write_text(json.dumps(row) + "\n")
    generation = {**SETTINGS, "seed": SEED, "stop": list(stop)}
    suite = {"name": "eq", "generation": generation,
             "tasks": [{"name": "t", "data": "d.jsonl", "metrics": ["exact_match"]}]}  # fmt: skip
    (tmp / "s.yaml").write_text(json.dumps(suite))
    out = run_suite(*lm, load_suite(tmp / "s.yaml"), progress=False)
    return str(out["tasks"]["t"]["examples"][0]["prediction"])


def _serve(served: Served, stop: tuple[str, ...]) -> str:
    body = {"model": "tiny", "messages": [{"role": "user", "content": USER}], "seed": SEED,
            "max_tokens": SETTINGS["max_new_tokens"], "temperature": SETTINGS["temperature"],
            "top_p": SETTINGS["top_p"], "top_k": SETTINGS["top_k"]}  # fmt: skip
    if stop:
        body["stop"] = list(stop)
    req = urllib.request.Request(
        f"{served.url}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return str(json.loads(resp.read())["choices"][0]["message"]["content"]).strip()


def test_eval_generate_serve_and_grpo_give_the_same_text(
    lm: tuple[Any, Any], served: Served, tmp_path: Path
) -> None:
    free = _generate(lm, ())
    assert len(free) > 8, free
    grpo, group = _grpo(lm, ())
    assert grpo == free
    assert len(set(group)) > 1  # the group's other samples draw their own numbers
    assert _eval(lm, (), tmp_path) == free
    assert _serve(served, ()) == free
    stop = free[5:8]  # a stop string inside the reply: every path cuts before it
    cut = free[: free.find(stop)].strip()
    assert _generate(lm, (stop,)) == cut
    assert _grpo(lm, (stop,))[0] == cut
    assert _eval(lm, (stop,), tmp_path) == cut
    assert _serve(served, (stop,)) == cut
