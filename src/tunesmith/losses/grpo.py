"""Group Relative Policy Optimization (GRPO; Shao et al. 2024, "DeepSeekMath", sec. 4.1).

For each prompt q, G completions o_1..o_G are sampled from the current policy (pi_old) and scored
r_1..r_G. Each completion's advantage is its reward relative to its group:

    A_i = (r_i - mean(r_1..r_G)) / (std(r_1..r_G) + eps)          (scale_rewards = True)
    A_i =  r_i - mean(r_1..r_G)                                   (scale_rewards = False,
                                                                   Dr. GRPO, Liu et al. 2025)

(std is the unbiased sample std, as in TRL). Every token t of o_i shares A_i. With the per-token
probability ratio rho_{i,t} = pi_theta(o_{i,t} | q, o_{i,<t}) / pi_old(o_{i,t} | q, o_{i,<t}), the
per-token loss is the negated PPO clipped surrogate plus a KL penalty towards the reference
policy pi_ref, estimated with Schulman's unbiased, non-negative "k3" estimator:

    l_{i,t} = - min(rho_{i,t} A_i, clip(rho_{i,t}, 1 - eps_low, 1 + eps_high) A_i) + beta * KL_{i,t}
    KL_{i,t} = exp(ref_{i,t} - logp_{i,t}) - (ref_{i,t} - logp_{i,t}) - 1

and the loss averages it over completion tokens, in one of two ways:

    token    (DAPO, Yu et al. 2025):   L = sum_{i,t} l_{i,t} / sum_i |o_i|
    sequence (original GRPO):          L = (1/N) sum_i (1/|o_i|) sum_t l_{i,t}

Tensors: log-probs, mask [B, T] over completion positions (mask 0 = padding); advantages [B].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4
) -> torch.Tensor:
    """A_i = (r_i - group mean) / (group std + eps), or without the division when ``scale`` is
    False. ``rewards`` [N * G] holds groups as consecutive runs of ``group_size``; -> [N * G]."""
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.view(-1, group_size)
    centered = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(grouped)
        denom = std + eps  # a zero-variance group has centred rewards 0: keep them 0 (eps = 0)
        centered = torch.where(denom > 0, centered / denom.clamp(min=1e-12), centered)
    return centered.reshape(-1)


def zero_variance_fraction(rewards: torch.Tensor, group_size: int) -> float:
    """Share of groups whose G rewards are all equal (they carry no policy gradient)."""
    grouped = rewards.view(-1, group_size)
    same = (grouped == grouped[:, :1]).all(dim=1)
    return float(same.float().mean())


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token KL(pi_theta || pi_ref) estimate exp(d) - d - 1 with d = ref - logp (>= 0)."""
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1


@dataclass
class GRPOLoss:
    loss: torch.Tensor  # scalar, differentiable
    kl: torch.Tensor  # mean per-token KL over the mask (detached; 0 when no reference)
    clip_fraction: torch.Tensor  # share of tokens whose clipped term was the active one
    ratio_mean: torch.Tensor


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    ref_logps: torch.Tensor | None = None,
    beta: float = 0.0,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
    loss_norm: str = "token",
    num_items: float | None = None,
) -> GRPOLoss:
    """The GRPO loss of one micro-batch (see the module docstring).

    ``num_items`` is the normaliser of the whole optimizer step: its completion-token count
    (``token``) or its completion count (``sequence``); default: this micro-batch's own, so that
    summing micro-batch losses with the step's ``num_items`` gives the full-batch loss.
    """
    eps_high = epsilon_low if epsilon_high is None else epsilon_high
    mask = mask.to(logps.dtype)
    ratio = torch.exp(logps - old_logps)
    adv = advantages.to(logps.dtype).unsqueeze(1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + eps_high) * adv
    per_token = -torch.min(unclipped, clipped)
    kl = torch.zeros_like(logps)
    if ref_logps is not None and beta != 0.0:
        kl = k3_kl(logps, ref_logps)
        per_token = per_token + beta * kl
    if loss_norm == "token":
        total = (per_token * mask).sum()
        denom = float(mask.sum()) if num_items is None else num_items
    elif loss_norm == "sequence":
        per_seq = (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        total = per_seq.sum()
        denom = float(mask.size(0)) if num_items is None else num_items
    else:
        raise ValueError(f"loss_norm must be 'token' or 'sequence', got {loss_norm!r}")
    n_tok = mask.sum().clamp(min=1.0)
    with torch.no_grad():
        active = (clipped < unclipped).to(logps.dtype)  # min picked the clipped term
        stats = (
            (kl * mask).sum() / n_tok,
            (active * mask).sum() / n_tok,
            (ratio * mask).sum() / n_tok,
        )
    return GRPOLoss(total / max(denom, 1.0), *stats)
