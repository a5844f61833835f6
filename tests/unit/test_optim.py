"""The AdamW kernel choice (optim.implementation) changes speed, not the update."""

from __future__ import annotations

import pytest
import torch

from tunesmith.config import OptimSection
from tunesmith.engine.optim import build_optimizer, kernel_options


def _trained(implementation: str) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    opt = build_optimizer(
        model, OptimSection(lr=1e-2, weight_decay=0.1, implementation=implementation)
    )
    x, y = torch.randn(32, 8), torch.randn(32, 4)
    for _ in range(5):
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("other", ["foreach", "for-loop", "auto"])
def test_kernels_give_the_same_update(other: str) -> None:
    for a, b in zip(_trained("fused"), _trained(other), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_auto_picks_fused_for_float_tensors_and_foreach_otherwise() -> None:
    assert kernel_options("auto", [torch.zeros(2, dtype=torch.float32)])["fused"] is True
    assert kernel_options("auto", [torch.zeros(2, dtype=torch.float64)]) == {"foreach": True}
    assert kernel_options("for-loop", [torch.zeros(2)]) == {"foreach": False}
    opt = build_optimizer(torch.nn.Linear(2, 2), OptimSection())
    assert opt.defaults["fused"] is True
