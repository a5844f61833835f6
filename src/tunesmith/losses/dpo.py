"""Preference-optimisation losses on per-sequence log-probabilities (pure functions).

Every input is a tensor of shape ``[B]`` (one entry per preference pair): the log-probability of
the chosen or rejected response given the prompt, *summed* over the response tokens, under the
policy ``pi`` or the frozen reference ``pi_ref``. Every loss returns per-pair losses ``[B]``; the
caller takes the mean. Notation: ``l_w = log pi(y_w|x)``, ``l_l = log pi(y_l|x)``, ``r_w`` and
``r_l`` the same under ``pi_ref``, ``|y|`` the response length in tokens, and

    delta = (l_w - r_w) - (l_l - r_l)        (the log-ratio margin, [B])

Conventions follow TRL 1.16 (``trl/trainer/dpo_trainer.py``, ``experimental/cpo``, ``orpo``), so
that ``beta`` means the same thing in both; differences are stated per loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOSSES: tuple[str, ...] = ("sigmoid", "ipo", "hinge", "simpo", "orpo")
REFERENCE_FREE: frozenset[str] = frozenset({"simpo", "orpo"})
"""Losses that need no reference model (no reference forward, no precomputed cache)."""


def dpo_sigmoid_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """DPO (Rafailov et al. 2023, eq. 7), conservative with label smoothing (Mitchell 2023).

        loss = -(1 - eps) * log sigmoid(beta * delta) - eps * log sigmoid(-beta * delta)

    ``eps`` is the assumed probability that a label is flipped; ``eps = 0`` is plain DPO and
    equals TRL 1.16's ``loss_type="sigmoid"`` (which no longer smooths labels; its ``aot`` losses
    and TRL < 1.0's sigmoid use exactly this smoothed form). Shapes: four ``[B]`` in, ``[B]`` out.
    """
    logits = beta * (policy_chosen - ref_chosen - (policy_rejected - ref_rejected))
    return -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


def ipo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """IPO (Azar et al. 2023, eq. 17), with ``beta`` in the role of the paper's ``tau``.

        loss = (h - 1 / (2 * beta))^2,   h = (l_w - r_w) / |y_w| - (l_l - r_l) / |y_l|

    With ``chosen_lengths``/``rejected_lengths`` (``[B]`` response token counts) each log-ratio is
    averaged per token, as TRL 1.16 does (confirmed with the IPO authors, per TRL's comment); the
    DPO method passes them. Without them ``h = delta`` (token sums, the paper's literal form).
    """
    chosen = policy_chosen - ref_chosen
    rejected = policy_rejected - ref_rejected
    if chosen_lengths is not None and rejected_lengths is not None:
        chosen = chosen / chosen_lengths.clamp(min=1)
        rejected = rejected / rejected_lengths.clamp(min=1)
    return (chosen - rejected - 1.0 / (2.0 * beta)) ** 2


def hinge_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """SLiC-style hinge (Zhao et al. 2023, SLiC-HF eq. 2) on the reference-normalised margin.

        loss = max(0, 1 - beta * delta)

    As in TRL 1.16 ``loss_type="hinge"``: SLiC's margin ``d`` is ``1 / beta`` and the log-probs are
    normalised by the reference (SLiC itself uses raw policy log-probs, i.e. ``r_w = r_l = 0``).
    """
    delta = policy_chosen - ref_chosen - (policy_rejected - ref_rejected)
    return torch.relu(1.0 - beta * delta)


def simpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    beta: float,
    gamma: float,
) -> torch.Tensor:
    """SimPO (Meng et al. 2024, eq. 6): reference-free and length-normalised.

        loss = -log sigmoid(beta * l_w / |y_w| - beta * l_l / |y_l| - gamma)

    ``gamma`` is the target reward margin (TRL's CPO trainer takes ``simpo_gamma`` and subtracts
    ``gamma / beta`` inside ``beta * (...)``: the same value). Lengths ``[B]`` are token counts.
    """
    chosen = policy_chosen / chosen_lengths.clamp(min=1)
    rejected = policy_rejected / rejected_lengths.clamp(min=1)
    return -F.logsigmoid(beta * (chosen - rejected) - gamma)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, stable at both ends (Maechler 2012)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def orpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    lam: float,
) -> torch.Tensor:
    """ORPO (Hong et al. 2024, eqs. 6-7): SFT on chosen plus an odds-ratio term, no reference.

        p_w = l_w / |y_w|,  p_l = l_l / |y_l|                (per-token mean log-probs)
        log odds(y) = p - log(1 - exp(p))
        loss = -p_w - lam * log sigmoid(log odds(y_w) - log odds(y_l))

    The SFT term here is the chosen response's token-mean NLL per pair (TRL takes the token mean
    over the whole batch instead: equal when responses have equal lengths); ``lam`` is the paper's
    lambda (TRL's ``beta`` in the ORPO trainer).
    """
    chosen = policy_chosen / chosen_lengths.clamp(min=1)
    rejected = policy_rejected / rejected_lengths.clamp(min=1)
    log_odds = (chosen - rejected) - (log1mexp(chosen) - log1mexp(rejected))
    return -chosen - lam * F.logsigmoid(log_odds)


def with_sft_term(
    pair_loss: torch.Tensor,
    policy_chosen: torch.Tensor,
    chosen_lengths: torch.Tensor,
    weight: float,
) -> torch.Tensor:
    """RPO (Pang et al. 2024, "Iterative Reasoning Preference Optimization", eq. 1): the pair loss
    plus an SFT (negative log-likelihood) term on the chosen reply.

        loss = pair_loss + w * NLL(y_w),   NLL(y_w) = -l_w / |y_w|

    ``pair_loss`` ``[B]`` (any loss of this module), ``policy_chosen`` ``[B]`` summed log-probs,
    ``chosen_lengths`` ``[B]`` response token counts; ``[B]`` out. The NLL is the per-token mean
    over the chosen *response* (TRL's ``rpo_alpha`` convention; the paper divides by the prompt
    and response length together), so ``w`` does not scale with reply length. It keeps DPO from
    lowering the chosen reply's likelihood ("likelihood displacement"); ``w = 0`` is the plain loss.
    """
    if weight == 0.0:
        return pair_loss
    return pair_loss + weight * (-policy_chosen / chosen_lengths.clamp(min=1))


@dataclass(frozen=True)
class PairLogps:
    """Per-pair quantities of one batch, all ``[B]``; ``ref_*`` are None when reference-free."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_lengths: torch.Tensor
    rejected_lengths: torch.Tensor
    ref_chosen: torch.Tensor | None = None
    ref_rejected: torch.Tensor | None = None


def preference_loss(
    kind: str,
    logps: PairLogps,
    beta: float,
    label_smoothing: float = 0.0,
    simpo_gamma: float = 0.5,
    orpo_lambda: float = 0.1,
    sft_weight: float = 0.0,
) -> torch.Tensor:
    """Per-pair loss ``[B]`` of the loss named ``kind`` (one of :data:`LOSSES`), plus
    ``sft_weight`` times the chosen reply's per-token NLL (:func:`with_sft_term`)."""
    pair = _pair_loss(kind, logps, beta, label_smoothing, simpo_gamma, orpo_lambda)
    return with_sft_term(pair, logps.chosen, logps.chosen_lengths, sft_weight)


def _pair_loss(
    kind: str,
    logps: PairLogps,
    beta: float,
    label_smoothing: float,
    simpo_gamma: float,
    orpo_lambda: float,
) -> torch.Tensor:
    lp = logps
    if kind == "simpo":
        return simpo_loss(
            lp.chosen, lp.rejected, lp.chosen_lengths, lp.rejected_lengths, beta, simpo_gamma
        )
    if kind == "orpo":
        return orpo_loss(
            lp.chosen, lp.rejected, lp.chosen_lengths, lp.rejected_lengths, orpo_lambda
        )
    if lp.ref_chosen is None or lp.ref_rejected is None:
        raise ValueError(f"loss {kind!r} needs reference log-probs")
    if kind == "sigmoid":
        return dpo_sigmoid_loss(
            lp.chosen, lp.rejected, lp.ref_chosen, lp.ref_rejected, beta, label_smoothing
        )
    if kind == "ipo":
        return ipo_loss(
            lp.chosen,
            lp.rejected,
            lp.ref_chosen,
            lp.ref_rejected,
            beta,
            lp.chosen_lengths,
            lp.rejected_lengths,
        )
    if kind == "hinge":
        return hinge_loss(lp.chosen, lp.rejected, lp.ref_chosen, lp.ref_rejected, beta)
    raise ValueError(f"unknown preference loss {kind!r}; choose one of {LOSSES}")


def implicit_rewards(
    policy_logps: torch.Tensor, ref_logps: torch.Tensor | None, beta: float
) -> torch.Tensor:
    """DPO's implicit reward ``beta * (log pi(y|x) - log pi_ref(y|x))`` (Rafailov et al. 2023, §5).

    ``[B]`` in, ``[B]`` out. Without a reference (SimPO/ORPO) pass length-averaged log-probs and
    ``ref_logps=None``: the reward is then SimPO's ``beta * l / |y|``.
    """
    if ref_logps is None:
        return beta * policy_logps
    return beta * (policy_logps - ref_logps)


def reward_stats(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Batch means of the rewards, their margin and the reward accuracy (all scalars).

    margin = mean(R_w - R_l);  accuracy = mean(1[R_w > R_l])   (ties count as wrong, as TRL)
    """
    return {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "margin": (chosen_rewards - rejected_rewards).mean(),
        "accuracy": (chosen_rewards > rejected_rewards).float().mean(),
    }


def kl_proxy(
    policy_logps: torch.Tensor, ref_logps: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """Per-token drift from the reference on the data: ``sum(l - r) / sum(|y|)`` (scalar).

    ``[N]`` log-probs of N responses (chosen and rejected together) and their lengths. This is
    ``E_data[log pi - log pi_ref]`` per token; it is not a true KL (the responses come from the
    data, not from ``pi``) and can be negative, but it tracks how far the policy has moved.
    """
    return (policy_logps - ref_logps).sum() / lengths.sum().clamp(min=1)
