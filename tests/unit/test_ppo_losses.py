from __future__ import annotations

import math

import pytest
import torch

from tunesmith.losses.ppo import (
    adaptive_kl_update,
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    explained_variance,
    gae,
    kl_penalty_rewards,
    masked_mean,
    whiten,
)


def close(x: torch.Tensor | float, expected: list[float] | float, tol: float = 1e-5) -> bool:
    got = torch.as_tensor(x, dtype=torch.float64)
    return bool(torch.allclose(got, torch.tensor(expected, dtype=torch.float64), atol=tol))


def test_gae_by_hand() -> None:
    # gamma 0.9, lam 0.5; two real tokens, the third is padding (its value 9 must be ignored)
    # t=1: delta = 1 + 0.9*0 - 0.2 = 0.8                     A_1 = 0.8
    # t=0: delta = 0 + 0.9*0.2 - 0.5 = -0.32                 A_0 = -0.32 + 0.9*0.5*0.8 = 0.04
    # returns = A + V = [0.54, 1.0, 0]
    rewards = torch.tensor([[0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.2, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    assert close(adv, [[0.04, 0.8, 0.0]])
    assert close(ret, [[0.54, 1.0, 0.0]])


def test_gae_lambda_one_gamma_one_is_reward_to_go_minus_value() -> None:
    rewards = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    values = torch.tensor([[0.5, 0.5, 0.5], [1.0, 7.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    # row 0: rewards-to-go [6, 5, 3]; row 1: [4]
    assert close(ret, [[6.0, 5.0, 3.0], [4.0, 0.0, 0.0]])
    assert close(adv, [[5.5, 4.5, 2.5], [3.0, 0.0, 0.0]])


def test_whiten_by_hand() -> None:
    # masked entries [1, 2, 3]: mean 2, variance (1 + 0 + 1) / 3 = 2/3
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    s = 1 / math.sqrt(2 / 3)
    assert close(whiten(x, mask), [[-s, 0.0, s, 0.0]])
    assert close(whiten(x, mask, shift_mean=False), [[2 - s, 2.0, 2 + s, 0.0]])


def test_kl_penalty_rewards_by_hand() -> None:
    # kl = logp - ref = [0.5, 0, (masked)]; beta = 0.1 -> [-0.05, 0]; score 2 on the last real one
    scores = torch.tensor([2.0])
    logp = torch.tensor([[-1.0, -2.0, -3.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.5]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    rewards, kl = kl_penalty_rewards(scores, logp, ref, mask, kl_coef=0.1)
    assert close(kl, [[0.5, 0.0, 0.0]])
    assert close(rewards, [[-0.05, 2.0, 0.0]])


def test_clipped_policy_loss_by_hand() -> None:
    # ratios [1.5, 0.5], A = [1, 1], eps = 0.2
    # -A*rho = [-1.5, -0.5]; -A*clip(rho) = [-1.2, -0.8]; max = [-1.2, -0.5]; mean = -0.85
    # clipped term taken on token 0 only -> clip fraction 0.5
    logp = torch.tensor([[math.log(1.5), math.log(0.5)]], requires_grad=True)
    old = torch.zeros(1, 2)
    adv = torch.ones(1, 2)
    mask = torch.ones(1, 2)
    loss, frac = clipped_policy_loss(logp, old, adv, mask, clip_range=0.2)
    assert close(loss, -0.85) and close(frac, 0.5)
    loss.backward()
    assert logp.grad is not None
    # the clipped token gets no gradient; the other gets d/dlogp (-rho/2) = -rho/2 = -0.25
    assert close(logp.grad, [[0.0, -0.25]])


def test_clipped_policy_loss_negative_advantage() -> None:
    # A = -1, rho = 0.5: -A*rho = 0.5, -A*clip(rho) = 0.8 -> max 0.8 (clipped)
    logp = torch.tensor([[math.log(0.5)]])
    loss, frac = clipped_policy_loss(
        logp, torch.zeros(1, 1), -torch.ones(1, 1), torch.ones(1, 1), 0.2
    )
    assert close(loss, 0.8) and close(frac, 1.0)


def test_clipped_value_loss_by_hand() -> None:
    # eps 0.5. token 0: V=1, old=0, R=0: V_clip=0.5, err 1, err_clip 0.25 -> 1
    #          token 1: V=1, old=0, R=2: V_clip=0.5, err 1, err_clip 2.25 -> 2.25 (clipped)
    # loss = 0.5 * mean(1, 2.25) = 0.8125; clip fraction 1/2
    v = torch.tensor([[1.0, 1.0]])
    old = torch.zeros(1, 2)
    ret = torch.tensor([[0.0, 2.0]])
    loss, frac = clipped_value_loss(v, old, ret, torch.ones(1, 2), clip_range=0.5)
    assert close(loss, 0.8125) and close(frac, 0.5)


def test_adaptive_kl_controller_by_hand() -> None:
    # KL 12 vs target 6: error clipped to 0.2; 8 samples, horizon 10000
    assert adaptive_kl_update(0.1, 12.0, 6.0, 10_000, 8) == pytest.approx(0.1 * (1 + 0.2 * 8e-4))
    # KL 5.4 vs 6: error -0.1 -> the coefficient shrinks
    assert adaptive_kl_update(0.1, 5.4, 6.0, 10_000, 8) == pytest.approx(0.1 * (1 - 0.1 * 8e-4))
    assert adaptive_kl_update(0.1, 6.0, 6.0, 10_000, 8) == pytest.approx(0.1)


def test_explained_variance_and_entropy_and_masked_mean() -> None:
    ret = torch.tensor([[1.0, 2.0, 3.0, 50.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert explained_variance(ret, ret, mask) == pytest.approx(1.0)
    assert explained_variance(torch.zeros(1, 4), ret, mask) == pytest.approx(0.0)
    assert math.isnan(explained_variance(ret, torch.ones(1, 4), mask))
    assert close(entropy_from_logits(torch.zeros(1, 2, 4)), [[math.log(4), math.log(4)]])
    assert close(masked_mean(ret, mask), 2.0)
