"""GRPO loss pieces against hand-worked numbers and against TRL 1.16's own loss code."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from tunesmith.losses.grpo import group_advantages, grpo_loss, k3_kl, zero_variance_fraction


def test_group_advantages_by_hand() -> None:
    # group 1: r = 1, 0, 0, 1 -> mean 0.5, unbiased std = sqrt(4 * 0.25 / 3) = 0.57735
    # group 2: all 1 -> 0 advantage
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    a = group_advantages(r, 4, scale=True, eps=0.0)
    s = math.sqrt(1.0 / 3.0)
    want = [0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s, 0, 0, 0, 0]
    assert a.tolist() == pytest.approx(want, abs=1e-6)
    dr = group_advantages(r, 4, scale=False)  # Dr. GRPO: centred only
    assert dr.tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])
    assert zero_variance_fraction(r, 4) == 0.5
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(r, 3)


def test_k3_by_hand() -> None:
    # d = ref - logp = log(0.5) - log(0.25) = log 2: exp(d) - d - 1 = 2 - 0.693147 - 1
    kl = k3_kl(torch.log(torch.tensor([0.25])), torch.log(torch.tensor([0.5])))
    assert kl.item() == pytest.approx(1 - math.log(2), abs=1e-6)
    assert k3_kl(torch.tensor([-1.0]), torch.tensor([-1.0])).item() == 0.0


def test_clipped_surrogate_by_hand() -> None:
    # Two completions, 2 and 1 tokens (second row padded). eps = 0.2, beta = 0.
    # row 0, A = +1: ratios 1.5 (clipped to 1.2 -> loss -1.2) and 1.0 (loss -1.0)
    # row 1, A = -2: ratio 0.5 (clip 0.8: min(0.5*-2, 0.8*-2) = -1.6 -> loss +1.6)
    old = torch.zeros(2, 2)
    logps = torch.log(torch.tensor([[1.5, 1.0], [0.5, 1.0]]))
    mask = torch.tensor([[1, 1], [1, 0]])
    adv = torch.tensor([1.0, -2.0])
    tok = grpo_loss(logps, old, adv, mask, loss_norm="token")
    assert tok.loss.item() == pytest.approx((-1.2 - 1.0 + 1.6) / 3)  # 3 tokens
    seq = grpo_loss(logps, old, adv, mask, loss_norm="sequence")
    assert seq.loss.item() == pytest.approx(((-1.2 - 1.0) / 2 + 1.6) / 2)
    assert tok.clip_fraction.item() == pytest.approx(2 / 3)  # tokens 1 and 3 clipped
    # beta adds beta * k3 per token; ref = logp + log 2 on every token: k3 = 1 - log 2
    ref = logps + math.log(2)
    with_kl = grpo_loss(logps, old, adv, mask, ref, beta=0.1, loss_norm="token")
    assert with_kl.loss.item() == pytest.approx(tok.loss.item() + 0.1 * (1 - math.log(2)))
    assert with_kl.kl.item() == pytest.approx(1 - math.log(2), abs=1e-6)


def test_micro_batches_sum_to_the_full_batch_loss() -> None:
    g = torch.Generator().manual_seed(0)
    logps, old = -torch.rand(4, 5, generator=g), -torch.rand(4, 5, generator=g)
    ref = -torch.rand(4, 5, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]])
    adv = torch.tensor([0.5, -1.0, 2.0, 0.1])
    for norm in ("token", "sequence"):
        full = grpo_loss(logps, old, adv, mask, ref, 0.05, loss_norm=norm).loss
        n = float(mask.sum()) if norm == "token" else 4.0
        halves = sum(
            grpo_loss(
                logps[s], old[s], adv[s], mask[s], ref[s], 0.05, loss_norm=norm, num_items=n
            ).loss
            for s in (slice(0, 2), slice(2, 4))
        )
        assert halves.item() == pytest.approx(full.item(), rel=1e-6)


class _Acc:
    num_processes = 1
    sync_gradients = True

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def reduce(self, x: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        return x

    def gather_for_metrics(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _trl_loss(loss_type: str, logps: torch.Tensor, inputs: dict[str, Any], beta: float) -> float:
    """TRL's GRPOTrainer._compute_loss run on a stand-in ``self`` whose model returns ``logps``."""
    trl_grpo = pytest.importorskip("trl.trainer.grpo_trainer")
    fake = SimpleNamespace(
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        loss_type=loss_type,
        epsilon_low=0.2,
        epsilon_high=0.28,
        use_vllm=False,
        vllm_importance_sampling_correction=False,
        model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        accelerator=_Acc(),
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        _entropy_bonus_enabled=False,
        aux_loss_enabled=False,
        _metrics={"train": defaultdict(list)},
        _get_per_token_logps_and_entropies=lambda *a, **k: (logps, torch.zeros_like(logps), None),
    )
    return float(trl_grpo.GRPOTrainer._compute_loss(fake, None, inputs))


@pytest.mark.parametrize(("loss_type", "norm"), [("grpo", "sequence"), ("dapo", "token")])
def test_parity_with_trl(loss_type: str, norm: str) -> None:
    g = torch.Generator().manual_seed(1)
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.5, 1.0])
    adv = group_advantages(rewards, 4)
    # TRL's own advantage formula (grpo_trainer.py, scale_rewards="group", eps 1e-4)
    grouped = rewards.view(-1, 4)
    trl_adv = (rewards - grouped.mean(1).repeat_interleave(4)) / (
        grouped.std(1).repeat_interleave(4) + 1e-4
    )
    assert torch.allclose(adv, trl_adv)
    logps = -torch.rand(8, 6, generator=g) * 3
    old = logps + 0.3 * torch.randn(8, 6, generator=g)  # ratios both sides of the clip range
    ref = logps + 0.2 * torch.randn(8, 6, generator=g)
    mask = (torch.arange(6)[None, :] < torch.tensor([6, 3, 1, 5, 6, 2, 4, 6])[:, None]).long()
    inputs = {
        "prompt_ids": torch.zeros(8, 2, dtype=torch.long),
        "prompt_mask": torch.ones(8, 2, dtype=torch.long),
        "completion_ids": torch.zeros(8, 6, dtype=torch.long),
        "completion_mask": mask,
        "advantages": adv,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum().float(),
    }
    ours = grpo_loss(logps, old, adv, mask, ref, 0.04, 0.2, 0.28, loss_norm=norm)
    assert ours.loss.item() == pytest.approx(_trl_loss(loss_type, logps, inputs, 0.04), rel=1e-5)
