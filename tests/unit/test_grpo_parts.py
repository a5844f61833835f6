"""GRPO's building blocks: prompt records and per-token completion log-probs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tunesmith.data.prompts import read_prompts, reward_fields
from tunesmith.data.records import DataError
from tunesmith.engine.token_logps import collate_completions, token_logps


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
