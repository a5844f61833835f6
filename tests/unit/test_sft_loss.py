from __future__ import annotations

import math

import torch

from tunesmith.losses.sft import IGNORE_INDEX, token_cross_entropy


def test_hand_worked_numbers() -> None:
    # Two positions predict; V = 2. Position 0 logits [0, 0] -> p(target 1) = 1/2;
    # position 1 logits [ln 3, 0] -> p(target 0) = 3/4. Position 2 has no next token.
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [5.0, -5.0]]])
    labels = torch.tensor([[IGNORE_INDEX, 1, 0]])
    loss, n = token_cross_entropy(logits, labels)
    assert int(n) == 2
    assert abs(float(loss) - (math.log(2) + math.log(4 / 3))) < 1e-6


def test_ignored_tokens_do_not_count_and_chunks_agree() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 11)
    labels = torch.randint(0, 11, (3, 7))
    labels[0, :4] = IGNORE_INDEX
    ref = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 11),
        labels[:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    for chunk in (1, 4, 1024):
        loss, n = token_cross_entropy(logits, labels, chunk_size=chunk)
        assert torch.allclose(loss, ref, atol=1e-5)
        assert int(n) == int((labels[:, 1:] != IGNORE_INDEX).sum())


def test_no_trained_token_gives_zero_with_grad() -> None:
    logits = torch.randn(1, 4, 5, requires_grad=True)
    loss, n = token_cross_entropy(logits, torch.full((1, 4), IGNORE_INDEX))
    loss.backward()
    assert int(n) == 0 and float(loss) == 0.0 and logits.grad is not None
