"""The planner's estimate against a measured SmolLM2-135M training step (CPU, fp32)."""

from __future__ import annotations

import pytest

from tests.helpers.measure_step import measure
from tunesmith.models import resolve_model
from tunesmith.plan.memory import TrainSetup, estimate
from tunesmith.plan.shapes import resolve_shape

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("method", "checkpointing"), [("lora", False), ("full", False), ("lora", True)]
)
def test_smollm2_estimate_within_25_percent(method: str, checkpointing: bool) -> None:
    model = resolve_model("smollm2-135m-instruct")
    setup = TrainSetup(
        method=method,  # type: ignore[arg-type]
        checkpointing=checkpointing,
        seq_len=512,
        micro_batch=2,
        precision="fp32",
        device_type="cpu",
    )
    predicted = estimate(resolve_shape(str(model)), setup).step_increment
    measured = measure(model, method, 512, 2, checkpointing)
    print(f"smollm2 {method} ckpt={checkpointing}: predicted {predicted:,} measured {measured:,}")
    assert predicted == pytest.approx(measured, rel=0.25), (predicted, measured)
