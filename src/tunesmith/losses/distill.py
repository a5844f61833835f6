"""Knowledge-distillation losses: forward KL, reverse KL and generalized JSD, mixed with the
hard-label cross-entropy.

Every function takes the logits of the positions that carry loss only, flattened to ``[N, V]``
(N trained positions of a chunk, V the shared vocabulary); the caller picks those positions
(completion tokens) and feeds a sequence chunk at a time, so the full ``[B, T, V]`` logits of
student and teacher never exist at once.

With temperature T, p = softmax(z_teacher / T) and q = softmax(z_student / T):

* forward KL (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"):
  ``KL(p || q) = sum_v p_v (log p_v - log q_v)``: mass-covering, the classic distillation loss;
* reverse KL (Gu et al. 2024, "MiniLLM"): ``KL(q || p) = sum_v q_v (log q_v - log p_v)``:
  mode-seeking, the student concentrates on what the teacher finds likely;
* generalized JSD (Agarwal et al. 2024, "On-Policy Distillation of Language Models: Learning
  from Self-Generated Mistakes", GKD, Eq. 1), with m = beta p + (1 - beta) q:
  ``JSD_beta(p, q) = beta KL(p || m) + (1 - beta) KL(q || m)``. The endpoints follow TRL's
  ``GKDTrainer.generalized_jsd_loss``: beta = 0 is the forward KL ``KL(p || q)`` and beta = 1
  the reverse KL ``KL(q || p)`` (the JSD itself vanishes at both ends; the limit of
  JSD_beta / beta as beta -> 0 is what TRL returns).

The per-token training loss (:func:`distill_token_loss`) is

    l_t = (1 - w) * T^2 * D_t + w * CE_t,      CE_t = -log softmax(z_student)_{y_t}

with w the hard-label weight and CE at temperature 1. The T^2 factor (Hinton et al. 2015)
keeps the divergence's gradient on the scale of the cross-entropy's as T changes (it is 1 at
T = 1). Positions without a hard label (on-policy samples: the target is the student's own
draw, not a reference reply) take ``w = 0``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Divergence = Literal["forward_kl", "reverse_kl", "jsd"]
DIVERGENCES: tuple[str, ...] = ("forward_kl", "reverse_kl", "jsd")


def _kl(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """``KL(a || b) = sum_v a_v (log a_v - log b_v)`` from log-probabilities [N, V] -> [N].
    Terms with a_v = 0 are 0 (also where log b_v = -inf)."""
    a = log_a.exp()
    return torch.where(a > 0, a * (log_a - log_b), torch.zeros_like(a)).sum(-1)


def token_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    kind: str,
    temperature: float = 1.0,
    beta: float = 0.5,
) -> torch.Tensor:
    """Per-position divergence D_t between teacher p and student q at temperature T.

    Args:
        student_logits: ``[N, V]`` (any float dtype; computed in float32).
        teacher_logits: ``[N, V]``.
        kind: ``forward_kl`` (KL(p||q)), ``reverse_kl`` (KL(q||p)) or ``jsd`` (generalized JSD
            with ``beta``, the weight of the teacher in the mixture m = beta p + (1-beta) q).
        temperature: T > 0; both logits are divided by it.
        beta: ``jsd`` only, in [0, 1]; 0 = forward KL, 1 = reverse KL (as TRL's GKD).

    Returns:
        ``[N]`` divergences (nats), each >= 0.
    """
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)  # [N, V]
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)  # [N, V]
    if kind == "forward_kl" or (kind == "jsd" and beta == 0.0):
        return _kl(log_p, log_q)
    if kind == "reverse_kl" or (kind == "jsd" and beta == 1.0):
        return _kl(log_q, log_p)
    if kind != "jsd":
        raise ValueError(f"unknown divergence {kind!r}; choose one of {DIVERGENCES}")
    b = torch.tensor(beta, dtype=log_p.dtype, device=log_p.device)
    log_m = torch.logsumexp(torch.stack([log_p + torch.log(b), log_q + torch.log1p(-b)]), dim=0)
    return beta * _kl(log_p, log_m) + (1.0 - beta) * _kl(log_q, log_m)


def _mix(
    div: torch.Tensor,
    ce: torch.Tensor,
    hard: torch.Tensor,
    temperature: float,
    hard_weight: float,
) -> torch.Tensor:
    """``sum_t (1 - w_t) T^2 D_t + w_t CE_t`` with ``w_t = hard_weight`` where ``hard``."""
    w = hard.to(div.dtype) * hard_weight  # [N]
    return ((1.0 - w) * temperature**2 * div + w * ce).sum()


def distill_token_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    hard: torch.Tensor,
    kind: str,
    temperature: float = 1.0,
    beta: float = 0.5,
    hard_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Summed per-token loss ``sum_t (1 - w_t) T^2 D_t + w_t CE_t`` over N positions.

    Args:
        student_logits: ``[N, V]`` student logits of the positions that carry loss.
        teacher_logits: ``[N, V]`` teacher logits of the same positions.
        targets: ``[N]`` the next token at each position (the reply's, or the student's draw).
        hard: ``[N]`` bool, True where ``targets`` is a reference reply (hard-label CE counts);
            False on on-policy samples, where ``w_t = 0``.
        kind, temperature, beta: see :func:`token_divergence`.
        hard_weight: w in [0, 1], the weight of the hard-label cross-entropy.

    Returns:
        ``(loss_sum, parts)``: the summed loss (a scalar with grad) and detached sums of the
        divergence ``div``, the cross-entropy ``ce`` (hard positions) and the forward KL at
        T = 1 ``kl`` (the metric the run reports, whatever the loss), each over the N positions.
    """
    div = token_divergence(student_logits, teacher_logits, kind, temperature, beta)  # [N]
    ce = F.cross_entropy(student_logits.float(), targets, reduction="none")  # [N]
    loss = _mix(div, ce, hard, temperature, hard_weight)
    with torch.no_grad():
        kl = div if kind == "forward_kl" and temperature == 1.0 else None
        if kl is None:
            kl = token_divergence(student_logits, teacher_logits, "forward_kl")
        parts = {"div": div.detach().sum(), "ce": (ce * hard).detach().sum(), "kl": kl.sum()}
    return loss, parts


def topk_token_loss(
    student_logits: torch.Tensor,
    teacher_topk: torch.Tensor,
    topk_ids: torch.Tensor,
    targets: torch.Tensor,
    hard: torch.Tensor,
    kind: str,
    temperature: float = 1.0,
    beta: float = 0.5,
    hard_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`distill_token_loss` against a cached top-k teacher, renormalised on its support.

    Only the teacher's k largest logits per position are kept (a cache of ``[N, k]`` instead of
    ``[N, V]``). Both distributions are restricted to those k ids K_t and renormalised there:
    ``p~ = softmax(z_teacher[K_t] / T)``, ``q~ = softmax(z_student[K_t] / T)``, and
    ``D_t = D(p~, q~)`` (any of the three divergences). The teacher's tail mass
    ``1 - sum_{v in K_t} p_v`` is dropped (the cache records it per position and the run logs
    its mean, so a k too small for the teacher shows). Without the
    renormalisation the reverse KL and the JSD would be infinite or undefined outside K_t.
    The hard-label CE uses the student's full ``[N, V]`` logits.

    Args:
        student_logits: ``[N, V]``.
        teacher_topk: ``[N, k]`` the teacher's k largest logits (temperature 1).
        topk_ids: ``[N, k]`` their token ids (int64).
        targets, hard, kind, temperature, beta, hard_weight: as in :func:`distill_token_loss`.

    Returns:
        ``(loss_sum, parts)`` as :func:`distill_token_loss`; ``kl`` is KL(p~ || q~) at T = 1.
    """
    student_k = student_logits.gather(-1, topk_ids)  # [N, k]
    div = token_divergence(student_k, teacher_topk, kind, temperature, beta)  # [N]
    ce = F.cross_entropy(student_logits.float(), targets, reduction="none")  # [N]
    loss = _mix(div, ce, hard, temperature, hard_weight)
    with torch.no_grad():
        kl = token_divergence(student_k, teacher_topk, "forward_kl")
        parts = {"div": div.detach().sum(), "ce": (ce * hard).detach().sum(), "kl": kl.sum()}
    return loss, parts
