"""PPO for language models: per-token KL-penalised rewards, GAE, clipped losses, KL control.

Shapes: B completions, L response positions (right-padded); ``mask`` [B, L] is 1 on real
response tokens. Position t is the state "prompt + first t response tokens" and its action is
response token t. The recipe is that of Ziegler et al. 2019 ("Fine-tuning language models from
human preferences") and Ouyang et al. 2022 (InstructGPT): PPO (Schulman et al. 2017) with
generalised advantage estimation (GAE, Schulman et al. 2015) and a KL penalty to the reference
policy whose coefficient an adaptive controller steers towards a target KL.
"""

from __future__ import annotations

import math

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum(x * mask) / max(sum(mask), 1): the mean over real tokens. x, mask: [B, L]."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Normalise ``x`` over the masked entries: (x - mu) / sqrt(var + 1e-8).

    mu and var are the masked mean and (population) variance; with ``shift_mean=False`` the
    mean is added back (only the scale changes). Masked-out entries come back as 0.
    x, mask: [B, L] -> [B, L].
    """
    mu = masked_mean(x, mask)
    var = masked_mean((x - mu) ** 2, mask)
    out = (x - mu) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mu
    return out * mask


def kl_penalty_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: a KL penalty on every token, the reward model's score on the last.

        kl[b, t]      = logp[b, t] - ref_logp[b, t]            (the k1 estimator of KL)
        rewards[b, t] = -beta * kl[b, t] + score[b] * [t == last real token of b]

    (Ziegler et al. 2019, sec. 2; Ouyang et al. 2022, eq. 2.)

    Args:
        scores: [B] reward-model scores of the whole completions.
        logprobs, ref_logprobs: [B, L] log-probabilities of the sampled tokens under the
            policy and the reference model.
        mask: [B, L] 1 on real response tokens (each row holds at least one).
        kl_coef: beta.

    Returns:
        (rewards [B, L], kl [B, L]), both 0 where mask is 0.
    """
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = (mask.sum(-1).long() - 1).clamp(min=0)  # [B]
    rows = torch.arange(rewards.size(0), device=rewards.device)
    rewards[rows, last] += scores.to(rewards.dtype)
    return rewards * mask, kl


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2015, eq. 16), backwards in time:

        delta_t = r_t + gamma * V_{t+1} - V_t        (V_{t+1} = 0 past the last real token)
        A_t     = delta_t + gamma * lam * A_{t+1}
        R_t     = A_t + V_t                          (the value targets)

    Args:
        rewards, values: [B, L]; mask: [B, L], right-padded (real tokens first in each row).
        gamma: discount; lam: the GAE lambda.

    Returns:
        (advantages [B, L], returns [B, L]), 0 where mask is 0.
    """
    values = values * mask
    advantages = torch.zeros_like(rewards)
    next_adv = torch.zeros_like(rewards[:, 0])
    next_value = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.size(1))):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = (delta + gamma * lam * next_adv) * m
        advantages[:, t] = adv
        next_adv, next_value = adv, values[:, t]
    return advantages, (advantages + values) * mask


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7), as a loss to minimise:

        rho_t = exp(logp_t - old_logp_t)
        L     = mean_t max(-A_t * rho_t, -A_t * clip(rho_t, 1 - eps, 1 + eps))

    Args: logprobs (with grad), old_logprobs, advantages, mask: [B, L]; clip_range: eps.

    Returns:
        (loss, clip fraction): scalars; the clip fraction is the share of tokens where the
        clipped term is the one taken (it carries no gradient).
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_frac = masked_mean((clipped > unclipped).float(), mask)
    return loss, clip_frac.detach()


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clipped value loss of PPO's reference implementation (OpenAI baselines ppo2):

        V_clip = old_V + clip(V - old_V, -eps, eps)
        L      = 1/2 * mean_t max((V_t - R_t)^2, (V_clip_t - R_t)^2)

    Args: values (with grad), old_values, returns, mask: [B, L]; clip_range: eps.

    Returns: (loss, clip fraction) as scalars.
    """
    v_clip = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    err = (values - returns) ** 2
    err_clip = (v_clip - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err, err_clip), mask)
    return loss, masked_mean((err_clip > err).float(), mask).detach()


def adaptive_kl_update(
    kl_coef: float, kl: float, target: float, horizon: int, n_steps: int
) -> float:
    """The adaptive KL controller of Ziegler et al. 2019 (sec. 2.2):

        e_t    = clip(KL_t / KL_target - 1, -0.2, 0.2)
        beta' = beta * (1 + K_beta * e_t),   K_beta = n_steps / horizon

    where n_steps is the number of samples (completions) behind the measured KL.
    """
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return kl_coef * (1.0 + error * n_steps / horizon)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var[R - V] / Var[R] over masked entries (1 = perfect value function, <= 0 useless);
    NaN when the returns do not vary."""
    var_r = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    diff = returns - values
    var_d = masked_mean((diff - masked_mean(diff, mask)) ** 2, mask)
    return float(1.0 - var_d / var_r) if float(var_r) > 0 else math.nan


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the next-token distribution at every position: [B, L, V] -> [B, L]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)
