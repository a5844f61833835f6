"""EWC / L2 penalties, the diagonal Fisher, probe scoring and the budget arithmetic, by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from tunesmith.forgetting.guard import deltas, flipped, over_budget
from tunesmith.forgetting.probe import answer_stats
from tunesmith.losses.anchor import anchor_penalty, anchor_penalty_grad, diagonal_fisher
from tunesmith.losses.sft import IGNORE_INDEX


def test_ewc_penalty_by_hand() -> None:
    theta = [torch.tensor([1.0, 2.0]), torch.tensor([[0.5]])]
    start = [torch.tensor([0.0, 1.0]), torch.tensor([[1.5]])]
    fisher = [torch.tensor([2.0, 3.0]), torch.tensor([[4.0]])]
    # diffs 1, 1, -1 -> F * d^2 = 2*1 + 3*1 + 4*1 = 9; lambda 0.5 -> 4.5
    assert anchor_penalty(theta, start, 0.5, fisher).item() == pytest.approx(4.5)
    # L2 (F = 1): 1 + 1 + 1 = 3; lambda 0.5 -> 1.5
    assert anchor_penalty(theta, start, 0.5).item() == pytest.approx(1.5)


def test_penalty_gradient_is_the_closed_form_and_matches_autograd() -> None:
    theta = [torch.tensor([1.0, 2.0], requires_grad=True)]
    start = [torch.tensor([0.0, 4.0])]
    fisher = [torch.tensor([2.0, 0.5])]
    grads = anchor_penalty_grad(theta, start, 3.0, fisher)
    # 2 * lambda * F * d = 2*3*2*1 = 12 ; 2*3*0.5*(-2) = -6
    assert grads[0].tolist() == pytest.approx([12.0, -6.0])
    anchor_penalty(theta, start, 3.0, fisher).backward()
    assert torch.allclose(theta[0].grad, grads[0])


def test_diagonal_fisher_is_the_mean_squared_gradient() -> None:
    batches = [[torch.tensor([1.0, -2.0])], [torch.tensor([3.0, 0.0])]]
    # ((1 + 9) / 2, (4 + 0) / 2) = (5, 2)
    assert diagonal_fisher(batches)[0].tolist() == pytest.approx([5.0, 2.0])
    with pytest.raises(ValueError):
        diagonal_fisher([])


def test_answer_stats_exact_match_and_loglikelihood() -> None:
    # vocab 3; position t predicts token t+1. Row 0's answer (positions 2,3) = tokens 1, 2.
    logits = torch.zeros(2, 4, 3)
    logits[0, 1, 1] = 5.0  # predicts token 1 at position 2: right
    logits[0, 2, 2] = 5.0  # predicts token 2 at position 3: right
    logits[1, 1, 0] = 5.0  # row 1 predicts 0 where 1 is the answer: wrong
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 1, 2], [IGNORE_INDEX, IGNORE_INDEX, 1, 2]])
    hit, logp = answer_stats(logits, labels)
    assert hit.tolist() == [True, False]
    big = math.log(math.exp(5.0) / (math.exp(5.0) + 2))  # the likely token's log-prob
    assert logp[0].item() == pytest.approx(2 * big, abs=1e-5)
    # row 1: log(1 / (e^5 + 2)) for token 1 at position 2, uniform log(1/3) at position 3
    expect = math.log(1 / (math.exp(5.0) + 2)) + math.log(1 / 3)
    assert logp[1].item() == pytest.approx(expect, abs=1e-5)


def test_deltas_budget_and_flips() -> None:
    before = {"text_ppl": 20.0, "task_acc": 0.75, "task_correct": [True, True, True, False]}
    now = {"text_ppl": 25.0, "task_acc": 0.5, "task_correct": [True, False, True, True]}
    d = deltas(before, now)
    assert d["probe_ppl_pct"] == 25.0  # 25/20 - 1 = 25 % (exact in binary)
    assert d["probe_acc_points"] == -25.0  # 50 % - 75 %
    budget = SimpleNamespace(max_ppl_increase_pct=25.0, max_acc_drop_points=30.0)
    assert over_budget(d, budget) == []  # 25 % is allowed, 25 points < 30
    budget = SimpleNamespace(max_ppl_increase_pct=24.9, max_acc_drop_points=20.0)
    assert len(over_budget(d, budget)) == 2
    assert over_budget(d, None) == []
    assert flipped(before, now, ["a", "b", "c", "d"]) == [{"index": 1, "prompt": "b"}]
    assert deltas({"text_ppl": 2.0}, {"text_ppl": 2.0}) == {
        "probe_ppl_pct": 0.0,
        "probe_acc_points": None,
    }
