"""The per-example hidden-state store of the top_k feature cache (models/frozen_layers.py)."""

from __future__ import annotations

from pathlib import Path

import torch

from tunesmith.models.frozen_features import cached_tensors, content_key, feature_batch
from tunesmith.models.frozen_layers import LayerFeatures


def _store() -> LayerFeatures:
    blocks = [torch.full((n, 3), float(i + 1)) for i, n in enumerate((2, 4, 1))]  # [T_i, H=3]
    offsets = torch.tensor([0, 2, 6, 7])
    return LayerFeatures(torch.cat(blocks), offsets)


def test_a_batch_pads_on_the_right_with_the_mask_of_each_example() -> None:
    batch = feature_batch(_store(), [2, 0])
    assert batch["states"].shape == (2, 2, 3)
    assert batch["attention_mask"].tolist() == [[1, 0], [1, 1]]
    assert batch["states"][0, 0].tolist() == [3.0, 3.0, 3.0]
    assert batch["states"][0, 1].abs().sum() == 0  # padding is zeros
    assert batch["states"][1].tolist() == [[1.0] * 3] * 2


def test_states_round_trip_through_the_disk_cache(tmp_path: Path) -> None:
    store = _store()
    _, hit = cached_tensors(store.tensors, "k", tmp_path)
    again, hit_again = cached_tensors(lambda: {}, "k", tmp_path)
    assert (hit, hit_again) == (False, True)
    back = LayerFeatures.from_tensors(again)
    assert len(back) == 3
    assert torch.equal(back.batch([1])["states"], store.batch([1])["states"])


def test_the_cut_layer_is_part_of_the_cache_key(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    items = [([1, 2, 3], 0)]
    keys = {content_key(tmp_path, items, 32, tag) for tag in ("", "top_k:1", "top_k:2")}
    assert len(keys) == 3
