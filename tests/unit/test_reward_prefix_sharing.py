"""The reward model's shared-prompt layout (each pair's prompt run once for both replies) gives
the padded layout's rewards and gradients, on Llama and on Gemma 3's sliding-window layers."""

from __future__ import annotations

import pytest
import torch

from tunesmith.data.pair_batches import collate_shared_prompt, shared_prompt_ends
from tunesmith.data.preference import EncodedPair
from tunesmith.data.sequence_batches import pair_batch
from tunesmith.methods.reward import PairScorer
from tunesmith.models.reward_head import load_head_model


def _pairs() -> list[EncodedPair]:
    g = torch.Generator().manual_seed(5)

    def ids(n: int) -> list[int]:
        return torch.randint(3, 90, (n,), generator=g).tolist()

    # (prompt, chosen, rejected) lengths; an empty rejected reply reads the last prompt token
    return [EncodedPair(ids(p), ids(c), ids(r)) for p, c, r in ((9, 5, 12), (20, 14, 3), (4, 7, 0))]


def test_reply_ends() -> None:
    batch = collate_shared_prompt(_pairs(), pad_id=0)
    chosen, rejected = shared_prompt_ends(batch)
    assert chosen.tolist() == [9 + 5 - 1, 20 + 14 - 1, 4 + 7 - 1]
    assert rejected.tolist() == [9 + 5 + 12 - 1, 20 + 14 + 3 - 1, 4 - 1]


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_shared_prompt_rewards_equal_padded(request: pytest.FixtureRequest, arch: str) -> None:
    model_dir = request.getfixturevalue("tiny_llama" if arch == "llama" else "tiny_gemma")
    extra_window = arch == "gemma3_text"
    torch.manual_seed(0)
    net = load_head_model(model_dir, 0, torch.float32, "sdpa")
    if extra_window:  # a window shorter than the rows, so the sliding mask matters
        for layer in net.model.layers:
            if getattr(layer.self_attn, "sliding_window", None):
                layer.self_attn.sliding_window = 6
        net.config.sliding_window = 6
    scorer = PairScorer(net, "decoder")
    pairs = _pairs()
    padded = pair_batch(
        [{"input_ids": p.prompt_ids + p.chosen_ids} for p in pairs],
        [{"input_ids": p.prompt_ids + p.rejected_ids} for p in pairs],
        pad_id=0,
    )
    shared = collate_shared_prompt(pairs, pad_id=0)
    assert shared["input_ids"].numel() < padded["input_ids"].numel()
    out = []
    for batch in (padded, shared):
        net.zero_grad()
        rewards = scorer(batch)
        (rewards * torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 2.0])).sum().backward()
        grads = {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}
        out.append((rewards.detach(), grads))
    (r_pad, g_pad), (r_shared, g_shared) = out
    torch.testing.assert_close(r_shared, r_pad, atol=1e-5, rtol=1e-4)
    for name, g in g_pad.items():
        torch.testing.assert_close(g_shared[name], g, atol=1e-5, rtol=1e-4)
