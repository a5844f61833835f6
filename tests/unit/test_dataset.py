from __future__ import annotations

import torch

from tunesmith.data.dataset import collate, split_held_out, step_batches
from tunesmith.data.records import Example, Message
from tunesmith.data.templates import IGNORE_INDEX, Encoded


def _examples(n: int) -> list[Example]:
    return [
        Example(
            source="f", line=i + 1, messages=(Message("user", str(i)), Message("assistant", "ok"))
        )
        for i in range(n)
    ]


def test_held_out_split_is_fixed_by_seed_and_disjoint() -> None:
    ex = _examples(50)
    train_a, val_a = split_held_out(ex, 0.2, seed=7, cap=None)
    _, val_b = split_held_out(ex, 0.2, seed=7, cap=None)
    _, val_c = split_held_out(ex, 0.2, seed=8, cap=None)
    assert [e.line for e in val_a] == [e.line for e in val_b] and len(val_a) == 10
    assert {e.line for e in val_a} != {e.line for e in val_c}
    assert {e.line for e in train_a}.isdisjoint({e.line for e in val_a})
    assert len(train_a) + len(val_a) == 50
    assert len(split_held_out(ex, 0.2, seed=7, cap=3)[1]) == 3


def test_step_batches_cover_each_epoch_and_resume_at_any_step() -> None:
    stream = step_batches(10, seed=1, micro_batch=2, accum=2)
    steps = [next(stream) for _ in range(5)]  # 20 items = two epochs
    flat = [i for step in steps for mb in step for i in mb]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert flat[:10] != flat[10:]  # each epoch reshuffled
    resumed = step_batches(10, seed=1, micro_batch=2, accum=2, start_step=3)
    assert next(resumed) == steps[3] and next(resumed) == steps[4]
    # micro-batch 4 x accumulation 1 sees the same items as 1 x 4
    a = next(step_batches(10, seed=1, micro_batch=4, accum=1))
    b = next(step_batches(10, seed=1, micro_batch=1, accum=4))
    assert a[0] == [i for mb in b for i in mb]


def test_collate_pads_right_and_masks_padding() -> None:
    batch = [Encoded([5, 6, 7], [IGNORE_INDEX, 6, 7], 2, False), Encoded([8], [8], 1, False)]
    out = collate(batch, pad_id=0)
    assert out["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert out["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]
    assert out["labels"].dtype == torch.long
