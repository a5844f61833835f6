from __future__ import annotations

import math

import torch

from tunesmith.losses.bradley_terry import bradley_terry_loss, pairwise_accuracy


def test_hand_worked_loss() -> None:
    # pair 1: r_c - r_r = 1 - 1 = 0 -> -log sigmoid(0) = log 2
    # pair 2: r_c - r_r = ln 3 - 0 -> sigmoid(ln 3) = 3/4 -> -log(3/4) = log(4/3)
    chosen = torch.tensor([1.0, math.log(3.0)])
    rejected = torch.tensor([1.0, 0.0])
    expected = (math.log(2) + math.log(4 / 3)) / 2
    assert abs(float(bradley_terry_loss(chosen, rejected)) - expected) < 1e-6


def test_margin_is_subtracted_from_the_difference() -> None:
    # r_c - r_r - m = ln 3 - ln 3 = 0 -> log 2; a per-pair margin tensor works the same way
    chosen, rejected = torch.tensor([math.log(3.0)]), torch.tensor([0.0])
    assert abs(float(bradley_terry_loss(chosen, rejected, math.log(3.0))) - math.log(2)) < 1e-6
    per_pair = bradley_terry_loss(
        torch.tensor([2.0, 2.0]), torch.tensor([0.0, 0.0]), torch.tensor([0.0, 2.0])
    )
    # pair 1: -log sigmoid(2) = log(1 + e^-2); pair 2: log 2
    expected = (math.log(1 + math.exp(-2)) + math.log(2)) / 2
    assert abs(float(per_pair) - expected) < 1e-6


def test_stable_for_large_differences_and_gradient_sign() -> None:
    chosen = torch.tensor([-200.0], requires_grad=True)
    loss = bradley_terry_loss(chosen, torch.tensor([200.0]))
    assert math.isfinite(float(loss)) and abs(float(loss) - 400.0) < 1e-3
    loss.backward()
    assert chosen.grad is not None and float(chosen.grad) < 0  # raising r_c lowers the loss


def test_pairwise_accuracy_counts_ties_as_wrong() -> None:
    acc = pairwise_accuracy(torch.tensor([1.0, 2.0, 0.0, 5.0]), torch.tensor([0.0, 2.0, 1.0, 4.0]))
    assert acc == 0.5
    assert pairwise_accuracy(torch.tensor([]), torch.tensor([])) == 0.0
