"""The planner's estimate against a measured SmolLM2-135M training step (CPU, fp32)."""

from __future__ import annotations

import pytest

from tests.helpers.measure_step import measure
from tunesmith.models.load import resolve_model
from tunesmith.plan.memory import TrainSetup, estimate
from tunesmith.plan.shapes import resolve_shape

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("method", "checkpointing", "dropout"),
    [("lora", False, 0.0), ("full", False, 0.0), ("lora", True, 0.0), ("lora", False, 0.05)],
)
def test_smollm2_estimate_within_25_percent(
    method: str, checkpointing: bool, dropout: float
) -> None:
    model = resolve_model("smollm2-135m-instruct")
    setup = TrainSetup(
        method=method,  # type: ignore[arg-type]
        checkpointing=checkpointing,
        seq_len=512,
        micro_batch=2,
        precision="fp32",
        device_type="cpu",
        lora_dropout=dropout,
    )
    predicted = estimate(resolve_shape(str(model)), setup).step_increment
    measured = measure(model, method, 512, 2, checkpointing, dropout)
    print(
        f"smollm2 {method} ckpt={checkpointing} dropout={dropout}: "
        f"predicted {predicted:,} measured {measured:,}"
    )
    assert predicted == pytest.approx(measured, rel=0.25), (predicted, measured)
