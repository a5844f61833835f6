"""GRPO's building blocks: prompt records, per-token completion log-probs, per-prompt sampling
seeds and sharded evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tunesmith.data.completion_batches import collate_completions
from tunesmith.data.prompts import read_prompts, reward_fields
from tunesmith.data.records import DataError
from tunesmith.engine.token_logps import token_logps
from tunesmith.eval.verifiable import VerifiableEval, merge_evals
from tunesmith.generation import (
    SamplingParams,
    derive_seed,
    pick_tokens_per_row,
    row_generators,
    sample,
)


def _write(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_prompt_records_and_reward_fields(tmp_path: Path, tiny_tokenizer_no_bos: Any) -> None:
    f = _write(
        tmp_path / "p.jsonl",
        [
            {"prompt": "2+2?", "answer": "4"},
            {"messages": [{"role": "user", "content": "3+3?"}], "answer": "6", "extra": 1},
        ],
    )
    recs = read_prompts([str(f)], tiny_tokenizer_no_bos, system_prompt="Be brief.")
    assert [r.text for r in recs] == ["2+2?", "3+3?"]
    assert [m.role for m in recs[0].messages] == ["system", "user"]
    rendered = tiny_tokenizer_no_bos.decode(recs[0].prompt_ids)
    assert rendered.endswith("<|im_start|>assistant\n") and "Be brief." in rendered
    fields = reward_fields(recs, 2)
    assert fields == {"answer": ["4", "4", "6", "6"], "extra": [None, None, 1, 1]}


@pytest.mark.parametrize(
    ("row", "where"),
    [
        ({"answer": "1"}, "p.jsonl:2: a prompt record needs"),
        ({"prompt": ""}, "p.jsonl:2: field 'prompt'"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "p.jsonl:2: field 'messages'"),
        ({"messages": [{"role": "bot", "content": "x"}]}, r"field 'messages\[0\]\.role'"),
    ],
)
def test_bad_prompt_records_name_file_line_field(
    tmp_path: Path, tiny_tokenizer_no_bos: Any, row: dict[str, Any], where: str
) -> None:
    f = _write(tmp_path / "p.jsonl", [{"prompt": "ok", "answer": "1"}, row])
    with pytest.raises(DataError, match=where):
        read_prompts([str(f)], tiny_tokenizer_no_bos, required=("answer",))


def test_missing_reward_field_and_overlong_prompt(
    tmp_path: Path, tiny_tokenizer_no_bos: Any
) -> None:
    f = _write(tmp_path / "p.jsonl", [{"prompt": "a question"}])
    with pytest.raises(DataError, match="field 'answer': missing"):
        read_prompts([str(f)], tiny_tokenizer_no_bos, required=("answer",))
    with pytest.raises(DataError, match="> max_prompt_length 3"):
        read_prompts([str(f)], tiny_tokenizer_no_bos, max_prompt_length=3)


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_gemma"])
def test_token_logps_match_a_full_forward(request: pytest.FixtureRequest, arch: str) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(request.getfixturevalue(arch))).eval()
    prompts, comps = [[5, 6, 7], [8, 9]], [[10, 11], [12, 13, 14, 15]]
    batch = collate_completions(prompts, comps, pad_id=0)
    with torch.no_grad():
        logps, mask = token_logps(model, batch, chunk_size=3)
        for row, (p, c) in enumerate(zip(prompts, comps, strict=True)):
            ids = torch.tensor([p + c])
            full = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
            want = [full[len(p) - 1 + i, tok].item() for i, tok in enumerate(c)]
            got = logps[row][mask[row]].tolist()
            assert got == pytest.approx(want, abs=1e-5)
    assert mask.sum(1).tolist() == [2, 4]


# ----------------------------------------------------------------------------- per-prompt seeds


def _lm(path: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM

    from tunesmith.models.load import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    return model, load_tokenizer(path)


def test_per_prompt_seeds_make_samples_independent_of_the_batch(tiny_llama: Path) -> None:
    """GRPO's rank-independence rests on this: a prompt's G samples depend on its seed alone."""
    model, tok = _lm(tiny_llama)
    texts = ["Hello there, how are", "One", "The quick brown fox jumps"]
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    params = SamplingParams(max_new_tokens=8, temperature=1.0, seed=123)
    together = sample(model, tok, prompts, params, 3, batch_size=9, seeds=[11, 22, 33])
    ids = [c.token_ids for c in together]
    assert len({tuple(x) for x in ids[:3]}) > 1  # the rows of one prompt differ
    # the last two prompts alone, in chunks that split their groups, under another params.seed
    other = SamplingParams(max_new_tokens=8, temperature=1.0, seed=999)
    alone = sample(model, tok, prompts[1:], other, 3, batch_size=2, seeds=[22, 33])
    assert [c.token_ids for c in alone] == ids[3:]
    assert [c.prompt_index for c in alone] == [0, 0, 0, 1, 1, 1]
    moved = sample(model, tok, prompts[:1], params, 3, seeds=[12])
    assert [c.token_ids for c in moved] != ids[:3]  # another seed, other samples
    with pytest.raises(ValueError, match="2 seeds for 3 prompts"):
        sample(model, tok, prompts, params, 1, seeds=[1, 2])


def test_per_row_draws_follow_the_filtered_distribution() -> None:
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]])).repeat(4000, 1)
    gens = row_generators(list(range(1000)), 4)
    picks = pick_tokens_per_row(logits, SamplingParams(temperature=1.0), gens)
    freq = torch.bincount(picks, minlength=4).float() / len(picks)
    assert torch.allclose(freq, torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.03)
    top2 = pick_tokens_per_row(logits, SamplingParams(temperature=1.0, top_k=2), gens)
    assert set(top2.tolist()) == {2, 3}  # outside the top-k never drawn
    assert derive_seed(7, 1, 0) == derive_seed(7, 1, 0) != derive_seed(7, 0, 1)


def test_merged_shares_equal_one_evaluation() -> None:
    a = VerifiableEval(1, {"math": 1.0}, 1.0, 4.0, [{"i": 0}])
    b = VerifiableEval(3, {"math": 0.0}, 0.0, 8.0, [{"i": 1}, {"i": 2}])
    empty = VerifiableEval(0, {}, 0.0, 0.0)
    m = merge_evals([a, empty, b], keep_samples=2)
    assert (m.n, m.accuracy, m.mean_length, m.mean_by_reward) == (4, 0.25, 7.0, {"math": 0.25})
    assert m.samples == [{"i": 0}, {"i": 1}]
