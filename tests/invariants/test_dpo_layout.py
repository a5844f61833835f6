"""DPO's shared-prompt layout gives the padded layout's log-probs and gradients, and a whole run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.methods.test_dpo import metrics, write_dpo_config, write_pref_data
from tunesmith.cli import main
from tunesmith.config import ConfigError, load_config
from tunesmith.data.packing import block_causal_mask
from tunesmith.data.pair_batches import collate_pairs, collate_shared_prompt
from tunesmith.data.preference import EncodedPair
from tunesmith.engine.logps import sequence_logps


def _random_pairs(vocab: int, shapes: list[tuple[int, int, int]]) -> list[EncodedPair]:
    g = torch.Generator().manual_seed(1)

    def ids(n: int) -> list[int]:
        return torch.randint(5, vocab, (n,), generator=g).tolist()

    return [EncodedPair(ids(p), ids(c), ids(r)) for p, c, r in shapes]


# (prompt, chosen, rejected) lengths: long and short prompts, one-token replies, and segments
# longer than gemma's sliding window (64), where the window must be measured in positions.
SHAPES = [(40, 5, 9), (3, 30, 2), (70, 20, 25), (10, 1, 1), (50, 60, 40)]


def _logps_and_grads(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    model.zero_grad()
    logps, lengths = sequence_logps(model, batch)
    weights = torch.linspace(-1.0, 1.0, logps.numel())  # a loss that weighs every row differently
    (logps * weights).sum().backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return torch.cat([logps.detach(), lengths.float()]), grads


@pytest.mark.parametrize("capacity", [None, 128], ids=["pair-per-row", "packed"])
@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_shared_prompt_equals_padded(
    request: pytest.FixtureRequest, arch: str, capacity: int | None
) -> None:
    model_dir = request.getfixturevalue("tiny_llama" if arch == "llama" else "tiny_gemma")
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation="sdpa"
    )
    pairs = _random_pairs(model.config.vocab_size, SHAPES)
    shared = collate_shared_prompt(pairs, 0, capacity=capacity)
    padded = collate_pairs(pairs, 0)
    assert shared["input_ids"].numel() < padded["input_ids"].numel()
    rows = shared["input_ids"].size(0)
    assert rows == len(pairs) if capacity is None else rows < len(pairs)
    out_s, grads_s = _logps_and_grads(model, shared)
    out_p, grads_p = _logps_and_grads(model, padded)
    torch.testing.assert_close(out_s, out_p, rtol=1e-5, atol=2e-4)
    assert grads_s.keys() == grads_p.keys()
    for name, grad in grads_p.items():
        torch.testing.assert_close(grads_s[name], grad, rtol=1e-4, atol=1e-5, msg=name)


def test_reply_sees_the_prompt_and_itself_only() -> None:
    # one row: prompt (2 tokens), chosen (2), rejected (2), one pad
    seq = torch.tensor([[0, 0, 0, 0, 0, 0, -1]])
    branch = torch.tensor([[0, 0, 1, 1, 2, 2, 0]])
    pos = torch.tensor([[0, 1, 2, 3, 2, 3, 0]])
    want = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0, 0],
            [1, 1, 0, 0, 1, 0, 0],  # first rejected token: the prompt, not the chosen reply
            [1, 1, 0, 0, 1, 1, 0],
            [0, 0, 0, 0, 0, 0, 1],  # padding sees itself only
        ],
        dtype=torch.bool,
    )
    assert torch.equal(block_causal_mask(seq, branch_ids=branch)[0, 0], want)
    # window 2 measured in positions (q - k < 2): the first rejected token (index 4, position 2)
    # still sees the last prompt token (position 1), which an index window (4 - 1 = 3) would hide
    windowed = block_causal_mask(seq, 2, branch, pos)[0, 0]
    assert windowed[4].tolist() == [False, True, False, False, True, False, False]
    assert windowed[5].tolist() == [False, False, False, False, True, True, False]


def test_collated_targets_point_at_each_tokens_own_predecessor() -> None:
    pair = EncodedPair([11, 12], [21, 22], [31])
    batch = collate_shared_prompt([pair], pad_id=0, capacity=8)
    assert batch["input_ids"].tolist() == [[11, 12, 21, 22, 31]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 2]]
    # 21 <- 12 (index 1), 22 <- 21 (index 2), 31 <- 12 (index 1, the last prompt token)
    assert batch["src"].tolist() == [1, 2, 1]
    assert batch["tgt"].tolist() == [21, 22, 31]
    assert batch["owner"].tolist() == [0, 0, 1]
    assert batch["lengths"].tolist() == [2, 1]
    # no prompt at all: like the padded layout, the first reply token is not predicted
    bare = collate_shared_prompt([EncodedPair([], [21, 22], [31, 32])], pad_id=0, capacity=8)
    assert (
        bare["lengths"].tolist()
        == collate_pairs([EncodedPair([], [21, 22], [31, 32])], 0)["labels"][:, 1:]
        .ne(-100)
        .sum(1)
        .tolist()
    )


def test_a_run_is_the_same_in_both_layouts(tmp_path: Path, tiny_llama: Path) -> None:
    data = write_pref_data(tmp_path / "pref.jsonl", n=24)
    losses, positions = {}, {}
    for layout, packed in (("shared_prompt", False), ("shared_prompt", True), ("padded", False)):
        name = f"{layout}-{packed}"
        cfg = write_dpo_config(
            tmp_path,
            tiny_llama,
            data,
            train={"max_steps": 3, "run_name": name},
            dpo={"layout": layout, "pack_pairs": packed, "beta": 0.5},
        )
        assert main(["train", str(cfg)]) == 0
        rows = metrics(tmp_path / "runs" / name, "train")
        losses[name] = [r["loss"] for r in rows]
        positions[name] = sum(r["input_positions"] for r in rows)
    for name in ("shared_prompt-False", "shared_prompt-True"):
        assert losses[name] == pytest.approx(losses["padded-False"], abs=1e-5)
        assert positions[name] < positions["padded-False"]


def test_shared_prompt_is_refused_for_virtual_tokens(tmp_path: Path, tiny_llama: Path) -> None:
    data = write_pref_data(tmp_path / "pref.jsonl", n=8)
    cfg = write_dpo_config(
        tmp_path, tiny_llama, data, adapter={"type": "prompt"}, dpo={"layout": "shared_prompt"}
    )
    with pytest.raises(ConfigError, match=r"dpo\.layout=shared_prompt does not work"):
        load_config(cfg)


def test_auto_layout_falls_back_to_padded_for_prompt_tuning(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_pref_data(tmp_path / "pref.jsonl", n=12)
    cfg = write_dpo_config(
        tmp_path, tiny_llama, data, adapter={"type": "prompt"}, train={"max_steps": 1}
    )
    assert main(["train", str(cfg)]) == 0
    assert "layout=padded (auto: virtual tokens" in capsys.readouterr().out
