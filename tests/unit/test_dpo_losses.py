"""Preference losses against hand-worked numbers and against TRL 1.16's DPO loss."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from tunesmith.losses.dpo import (
    PairLogps,
    dpo_sigmoid_loss,
    hinge_loss,
    implicit_rewards,
    ipo_loss,
    kl_proxy,
    log1mexp,
    orpo_loss,
    preference_loss,
    reward_stats,
    simpo_loss,
    with_sft_term,
)

T = torch.tensor
# One pair: policy log-probs l_w = -1, l_l = -3; reference r_w = r_l = -2.
# delta = (l_w - r_w) - (l_l - r_l) = (-1 + 2) - (-3 + 2) = 1 - (-1) = 2.
PW, PL, RW, RL = T([-1.0]), T([-3.0]), T([-2.0]), T([-2.0])


def test_sigmoid_plain_and_label_smoothed() -> None:
    # beta = 0.5: beta * delta = 1 -> -log sigmoid(1) = log(1 + e^-1) = 0.3132617
    plain = dpo_sigmoid_loss(PW, PL, RW, RL, beta=0.5)
    assert float(plain) == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    assert float(plain) == pytest.approx(0.3132617, abs=1e-6)
    # eps = 0.1: 0.9 * log(1 + e^-1) + 0.1 * log(1 + e^1) = 0.2819355 + 0.1313262 = 0.4132617
    smoothed = dpo_sigmoid_loss(PW, PL, RW, RL, beta=0.5, label_smoothing=0.1)
    assert float(smoothed) == pytest.approx(0.4132617, abs=1e-6)


def test_ipo_summed_and_length_averaged() -> None:
    # beta = 0.5 -> target 1 / (2 beta) = 1. Summed: h = delta = 2 -> (2 - 1)^2 = 1.
    assert float(ipo_loss(PW, PL, RW, RL, beta=0.5)) == pytest.approx(1.0, abs=1e-6)
    # Lengths |y_w| = 2, |y_l| = 4: h = 1/2 - (-1)/4 = 0.75 -> (0.75 - 1)^2 = 0.0625.
    got = ipo_loss(PW, PL, RW, RL, beta=0.5, chosen_lengths=T([2.0]), rejected_lengths=T([4.0]))
    assert float(got) == pytest.approx(0.0625, abs=1e-6)


def test_hinge() -> None:
    # beta = 0.25: 1 - 0.25 * 2 = 0.5; beta = 1: max(0, 1 - 2) = 0.
    assert float(hinge_loss(PW, PL, RW, RL, beta=0.25)) == pytest.approx(0.5, abs=1e-6)
    assert float(hinge_loss(PW, PL, RW, RL, beta=1.0)) == 0.0


def test_simpo() -> None:
    # l_w = -2 over 2 tokens -> -1; l_l = -6 over 3 tokens -> -2; beta = 2, gamma = 1:
    # 2 * (-1 - (-2)) - 1 = 1 -> -log sigmoid(1) = 0.3132617.
    got = simpo_loss(T([-2.0]), T([-6.0]), T([2.0]), T([3.0]), beta=2.0, gamma=1.0)
    assert float(got) == pytest.approx(0.3132617, abs=1e-6)


def test_orpo() -> None:
    # Per-token means p_w = log 0.5 (2 tokens, sum 2 log 0.5), p_l = log 0.25 (1 token).
    # odds(y_w) = 0.5 / 0.5 = 1 -> log 0; odds(y_l) = 0.25 / 0.75 -> -log 3; difference log 3;
    # log sigmoid(log 3) = log(3/4). Loss = -log 0.5 - 0.1 * log(3/4) = 0.6931472 + 0.0287682.
    got = orpo_loss(T([2 * math.log(0.5)]), T([math.log(0.25)]), T([2.0]), T([1.0]), lam=0.1)
    assert float(got) == pytest.approx(0.7219154, abs=1e-6)


def test_log1mexp_is_stable_at_both_ends() -> None:
    x = T([-1e-6, -0.5, -2.0, -50.0], dtype=torch.float64)
    expected = torch.log(1 - torch.exp(x))
    assert torch.allclose(log1mexp(x), expected, rtol=1e-6)
    assert torch.isfinite(log1mexp(T([-1e-9, -200.0]))).all()


def test_rewards_margin_accuracy_and_kl_proxy() -> None:
    # Rewards 0.5 * (l - r): chosen [0.5*(−1+2), 0.5*(−4+2)] = [0.5, −1];
    # rejected [0.5*(−3+2), 0.5*(−1+2)] = [−0.5, 0.5]. Margins [1, −1.5] -> mean −0.25;
    # accuracy: first pair right, second wrong -> 0.5.
    chosen = implicit_rewards(T([-1.0, -4.0]), T([-2.0, -2.0]), beta=0.5)
    rejected = implicit_rewards(T([-3.0, -1.0]), T([-2.0, -2.0]), beta=0.5)
    assert chosen.tolist() == [0.5, -1.0] and rejected.tolist() == [-0.5, 0.5]
    stats = reward_stats(chosen, rejected)
    assert float(stats["margin"]) == pytest.approx(-0.25)
    assert float(stats["accuracy"]) == 0.5
    assert float(stats["rewards/chosen"]) == pytest.approx(-0.25)
    # KL proxy: sum(l - r) = (1) + (−2) + (−1) + (1) = −1 over 2+2+3+3 = 10 tokens -> −0.1.
    logps = T([-1.0, -4.0, -3.0, -1.0])
    ref = T([-2.0, -2.0, -2.0, -2.0])
    assert float(kl_proxy(logps, ref, T([2.0, 2.0, 3.0, 3.0]))) == pytest.approx(-0.1)
    # Reference-free: reward = beta * (length-averaged) log-prob.
    assert implicit_rewards(T([-2.0]), None, beta=2.0).tolist() == [-4.0]


def test_dispatch_matches_the_functions_and_checks_reference() -> None:
    lengths = T([2.0])
    lp = PairLogps(PW, PL, lengths, lengths, RW, RL)
    assert torch.equal(preference_loss("hinge", lp, 0.25), hinge_loss(PW, PL, RW, RL, 0.25))
    with pytest.raises(ValueError, match="needs reference"):
        preference_loss("sigmoid", PairLogps(PW, PL, lengths, lengths), 0.5)
    with pytest.raises(ValueError, match="unknown preference loss"):
        preference_loss("kto", lp, 0.5)


# ----------------------------------------------------------------------------- TRL parity


def _trl_loss(
    loss_type: str,
    beta: float,
    per_token: torch.Tensor,
    completion_mask: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
) -> torch.Tensor:
    """TRL 1.16's own ``DPOTrainer._compute_loss`` run on given per-token log-probs.

    The model is a stub returning ``per_token`` as its (fused-head) ``log_probs``, and the
    reference log-probs come in as precomputed, so the loss arithmetic is exactly TRL's.
    """
    from trl import DPOTrainer

    two_b, length = completion_mask.shape
    outputs = SimpleNamespace(
        log_probs=per_token,
        entropy=torch.zeros(two_b, length - 1),
        mean_logits=torch.zeros(two_b, length - 1),
        is_top1=torch.zeros(two_b, length - 1, dtype=torch.bool),
    )

    def model(**_: Any) -> SimpleNamespace:
        return outputs

    model.training = True  # type: ignore[attr-defined]
    accelerator = SimpleNamespace(
        device=torch.device("cpu"), gather_for_metrics=lambda x: x, gather=lambda x: x
    )
    fake = SimpleNamespace(
        model=model,
        accelerator=accelerator,
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=0.0,
        use_weighting=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.ones(two_b, length, dtype=torch.long),
        "attention_mask": torch.ones(two_b, length, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref_chosen,
        "ref_rejected_logps": ref_rejected,
    }
    return DPOTrainer._compute_loss(fake, model, inputs, return_outputs=False)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge"])
def test_parity_with_trl_dpo_loss(loss_type: str) -> None:
    pytest.importorskip("trl")
    torch.manual_seed(0)
    batch, length, beta = 3, 7, 0.2
    # Rows 0..2 chosen, 3..5 rejected; response lengths differ so IPO's averaging matters.
    lengths = torch.tensor([2, 5, 3, 4, 1, 6])
    completion_mask = torch.zeros(2 * batch, length, dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        completion_mask[i, length - n :] = 1
    shift_mask = completion_mask[:, 1:].float()
    per_token = -torch.rand(2 * batch, length - 1) * 3 * shift_mask  # 0 outside responses
    logps = per_token.sum(dim=1)
    ref = logps + torch.randn(2 * batch)
    want = _trl_loss(loss_type, beta, per_token, completion_mask, ref[:batch], ref[batch:])
    lp = PairLogps(
        logps[:batch],
        logps[batch:],
        lengths[:batch].float(),
        lengths[batch:].float(),
        ref[:batch],
        ref[batch:],
    )
    got = preference_loss(loss_type, lp, beta).mean()
    assert float(got) == pytest.approx(float(want), rel=1e-6, abs=1e-7)


def test_sft_weight_adds_the_chosen_per_token_nll() -> None:
    """RPO: loss = DPO + w * (-l_w / |y_w|). Pair 1 as above (l_w = -1, |y_w| = 4): 0.3132617 +
    0.5 * 0.25 = 0.4382617. Pair 2: l_w = -6, l_l = -2, refs -4 and -4: delta = -2 - 2 = -4,
    beta * delta = -2, -log sigmoid(-2) = log(1 + e^2) = 2.1269280; |y_w| = 3: + 0.5 * 2
    = 3.1269280.
    """
    lp = PairLogps(
        chosen=T([-1.0, -6.0]),
        rejected=T([-3.0, -2.0]),
        chosen_lengths=T([4.0, 3.0]),
        rejected_lengths=T([5.0, 5.0]),
        ref_chosen=T([-2.0, -4.0]),
        ref_rejected=T([-2.0, -4.0]),
    )
    plain = preference_loss("sigmoid", lp, beta=0.5)
    rpo = preference_loss("sigmoid", lp, beta=0.5, sft_weight=0.5)
    assert rpo.tolist() == pytest.approx([0.4382617, 3.1269280], abs=1e-6)
    assert (rpo - plain).tolist() == pytest.approx([0.125, 1.0], abs=1e-6)
    assert torch.equal(with_sft_term(plain, lp.chosen, lp.chosen_lengths, 0.0), plain)
