"""Unit tests of checkpoint averaging weights, tensor checks and the verification comparison."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tunesmith.merge import MergeError, average_weights
from tunesmith.merge.average import average_files
from tunesmith.merge.verify import Outputs, compare


def test_uniform_and_ema_weights() -> None:
    assert average_weights(4) == [0.25] * 4
    # ema_1 = x1; ema_2 = .9 ema_1 + .1 x2; ema_3 = .9 ema_2 + .1 x3
    w = average_weights(3, ema=0.9)
    assert w == pytest.approx([0.81, 0.09, 0.1])
    assert sum(average_weights(7, ema=0.99)) == pytest.approx(1.0)
    assert average_weights(3, ema=0.0) == [0.0, 0.0, 1.0]  # decay 0: the last checkpoint
    with pytest.raises(MergeError, match="--ema"):
        average_weights(3, ema=1.0)
    with pytest.raises(MergeError, match="--last"):
        average_weights(0)


def _write(path: Path, **tensors: torch.Tensor) -> Path:
    save_file(tensors, str(path))
    return path


def test_average_files_weighted_and_dtype_kept(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.safetensors", w=torch.zeros(2, 3, dtype=torch.bfloat16))
    b = _write(tmp_path / "b.safetensors", w=torch.ones(2, 3, dtype=torch.bfloat16))
    avg = average_files([a, b], [0.25, 0.75])
    assert avg["w"].dtype == torch.bfloat16
    torch.testing.assert_close(avg["w"], torch.full((2, 3), 0.75, dtype=torch.bfloat16))


def test_average_files_shape_mismatch_names_files_and_tensor(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.safetensors", x=torch.zeros(2), w=torch.zeros(2, 3))
    b = _write(tmp_path / "b.safetensors", x=torch.zeros(2), w=torch.zeros(3, 3))
    with pytest.raises(MergeError) as err:
        average_files([a, b], [0.5, 0.5])
    msg = str(err.value)
    assert str(a) in msg and str(b) in msg and "tensor w" in msg and "(2, 3)" in msg


def test_average_files_missing_tensor(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.safetensors", x=torch.zeros(2), w=torch.zeros(2))
    b = _write(tmp_path / "b.safetensors", x=torch.zeros(2))
    with pytest.raises(MergeError, match="tensor w is in only one"):
        average_files([a, b], [0.5, 0.5])


def test_compare_reports_diff_agreement_and_tolerance() -> None:
    ref = Outputs([torch.zeros(3, 5), torch.zeros(2, 5)], [[1, 2], [3, 4]])
    same = compare(ref, Outputs([torch.zeros(3, 5), torch.zeros(2, 5)], [[1, 2], [3, 4]]))
    assert same["ok"] and same["max_abs_logit_diff"] == 0 and same["greedy_agreement"] == 1.0
    bumped = torch.zeros(2, 5)
    bumped[1, 2] = 0.01
    off = compare(ref, Outputs([torch.zeros(3, 5), bumped], [[1, 2], [3, 5]]), tolerance=1e-3)
    assert not off["ok"] and off["max_abs_logit_diff"] == pytest.approx(0.01)
    assert off["greedy_agreement"] == 0.5 and "tolerance" in off["reason"]
    for first, second in (
        (torch.full((3, 5), float("nan")), bumped),
        (torch.zeros(3, 5), bumped * float("nan")),
    ):
        nan = compare(ref, Outputs([first, second], [[1, 2], [3, 4]]), tolerance=1.0)
        assert not nan["ok"] and nan["max_abs_logit_diff"] == float("inf")
