"""Distillation losses (tunesmith.losses.distill) against hand-worked numbers and TRL's GKD."""

from __future__ import annotations

import math

import pytest
import torch

from tunesmith.losses.distill import distill_token_loss, token_divergence, topk_token_loss

# One position, vocabulary 2: logits chosen so that the probabilities are round numbers.
# teacher p = (0.8, 0.2): logits (log 4, 0); student q = (0.5, 0.5): logits (0, 0).
P, Q = (0.8, 0.2), (0.5, 0.5)
TEACHER = torch.tensor([[math.log(4.0), 0.0]])
STUDENT = torch.tensor([[0.0, 0.0]])


def _kl(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return sum(x * math.log(x / y) for x, y in zip(a, b, strict=True))


def test_forward_and_reverse_kl_by_hand() -> None:
    # KL(p||q) = 0.8 ln 1.6 + 0.2 ln 0.4 = 0.19274; KL(q||p) = 0.5 ln(0.625) + 0.5 ln(2.5)
    fwd = 0.8 * math.log(1.6) + 0.2 * math.log(0.4)
    rev = 0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2)
    assert fwd == pytest.approx(0.192745, abs=1e-6)
    assert rev == pytest.approx(0.223144, abs=1e-6)
    assert float(token_divergence(STUDENT, TEACHER, "forward_kl")) == pytest.approx(fwd, abs=1e-6)
    assert float(token_divergence(STUDENT, TEACHER, "reverse_kl")) == pytest.approx(rev, abs=1e-6)


def test_generalized_jsd_by_hand_and_its_endpoints() -> None:
    # beta = 0.5: m = (0.65, 0.35); JSD = 0.5 KL(p||m) + 0.5 KL(q||m)
    m = (0.65, 0.35)
    hand = 0.5 * _kl(P, m) + 0.5 * _kl(Q, m)
    # KL(p||m) = 0.8 ln(0.8/0.65) + 0.2 ln(0.2/0.35) = 0.054188; KL(q||m) = 0.047155
    assert hand == pytest.approx(0.050672, abs=1e-5)
    assert float(token_divergence(STUDENT, TEACHER, "jsd", beta=0.5)) == pytest.approx(hand)
    # beta = 0.25 weights the teacher a quarter: m = 0.25 p + 0.75 q
    m = (0.575, 0.425)
    hand = 0.25 * _kl(P, m) + 0.75 * _kl(Q, m)
    assert float(token_divergence(STUDENT, TEACHER, "jsd", beta=0.25)) == pytest.approx(hand)
    # endpoints: TRL's convention, 0 = forward KL, 1 = reverse KL
    for beta, kind in ((0.0, "forward_kl"), (1.0, "reverse_kl")):
        got = token_divergence(STUDENT, TEACHER, "jsd", beta=beta)
        assert torch.allclose(got, token_divergence(STUDENT, TEACHER, kind))


def test_temperature_divides_both_logits() -> None:
    # at T = 2: p = softmax((log 4, 0) / 2) = (2/3, 1/3), q stays uniform
    got = token_divergence(STUDENT, TEACHER, "forward_kl", temperature=2.0)
    assert float(got) == pytest.approx(_kl((2 / 3, 1 / 3), Q), abs=1e-6)


def test_mixed_loss_weights_divergence_and_hard_label_ce() -> None:
    # two positions; target 1 at both; the second has no hard label (on-policy)
    student = STUDENT.repeat(2, 1)
    teacher = TEACHER.repeat(2, 1)
    targets = torch.tensor([1, 1])
    hard = torch.tensor([True, False])
    w, t = 0.3, 2.0
    loss, parts = distill_token_loss(
        student, teacher, targets, hard, "forward_kl", temperature=t, hard_weight=w
    )
    div = _kl((2 / 3, 1 / 3), Q)
    ce = math.log(2.0)  # -log q_1 at T = 1
    hand = ((1 - w) * t * t * div + w * ce) + (t * t * div)  # w = 0 without a hard label
    assert float(loss) == pytest.approx(hand, abs=1e-6)
    assert float(parts["ce"]) == pytest.approx(ce, abs=1e-6)  # hard positions only
    assert float(parts["kl"]) == pytest.approx(2 * _kl(P, Q), abs=1e-6)  # reported at T = 1


def test_identical_distributions_give_zero_and_the_gradient_moves_the_student() -> None:
    z = torch.randn(5, 11)
    for kind in ("forward_kl", "reverse_kl", "jsd"):
        assert torch.allclose(token_divergence(z, z, kind), torch.zeros(5), atol=1e-6)
    student = torch.zeros(1, 2, requires_grad=True)
    loss, _ = distill_token_loss(student, TEACHER, torch.tensor([0]), torch.tensor([False]), "jsd")
    loss.backward()
    assert student.grad is not None and student.grad[0, 0] < 0 < student.grad[0, 1]


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_matches_trl_gkd_generalized_jsd(beta: float, temperature: float) -> None:
    gkd = pytest.importorskip("trl.experimental.gkd.gkd_trainer")
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(2, 5, 17, generator=gen) * 3
    teacher = torch.randn(2, 5, 17, generator=gen) * 3
    labels = torch.randint(0, 17, (2, 5), generator=gen)
    labels[0, :2] = -100  # the prompt: no loss
    labels[1, 4] = -100
    trl_loss = gkd.GKDTrainer.generalized_jsd_loss(
        student, teacher, labels=labels, beta=beta, temperature=temperature
    )
    keep = labels != -100
    ours = token_divergence(student[keep], teacher[keep], "jsd", temperature, beta)
    assert float(ours.sum() / keep.sum()) == pytest.approx(float(trl_loss), rel=1e-5, abs=1e-7)


def test_top_k_loss_renormalises_on_the_teacher_support() -> None:
    gen = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(4, 9, generator=gen), torch.randn(4, 9, generator=gen)
    targets, hard = torch.tensor([0, 3, 5, 8]), torch.tensor([True, True, False, True])
    args = ("jsd", 1.5, 0.4, 0.25)
    # k = V (in the teacher's descending order): exactly the full loss
    top = teacher.topk(9, dim=-1)
    full, full_parts = distill_token_loss(student, teacher, targets, hard, *args)
    cached, parts = topk_token_loss(student, top.values, top.indices, targets, hard, *args)
    assert float(cached) == pytest.approx(float(full), abs=1e-5)
    assert float(parts["kl"]) == pytest.approx(float(full_parts["kl"]), abs=1e-5)
    # k = 2 by hand: forward KL of the two renormalised distributions
    top2 = teacher.topk(2, dim=-1)
    _, parts = topk_token_loss(
        student, top2.values, top2.indices, targets, hard, "forward_kl", 1.0, 0.5, 0.0
    )
    p = torch.softmax(top2.values, -1)
    q = torch.softmax(student.gather(-1, top2.indices), -1)
    hand = (p * (p / q).log()).sum()
    assert float(parts["div"]) == pytest.approx(float(hand), abs=1e-6)
