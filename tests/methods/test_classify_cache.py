"""Head-only classification on cached frozen features equals the uncached path, step for step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.methods.test_classify import config, make_tiny_bert
from tunesmith.config import ConfigError
from tunesmith.methods.classify import run


def losses(run_dir: Path) -> list[float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r.get("split") == "train"]


def val_rows(run_dir: Path) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("split") == "val"]


@pytest.fixture(scope="module")
def bert_no_dropout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dropout 0: the live backbone is then deterministic, as the cached features are."""
    return make_tiny_bert(tmp_path_factory.mktemp("bert0") / "tiny-bert", dropout=0.0)


def _pair(tmp_path: Path, model: Path, **train: Any) -> tuple[Any, Any]:
    runs = {}
    for cache in ("none", "memory"):
        extra = {"classify": {"cache_features": cache}, "train": {"run_name": cache, **train}}
        runs[cache] = run(config(tmp_path, model, "head", **extra))
    return runs["none"], runs["memory"]


def test_cached_head_training_equals_the_live_backbone(
    tmp_path: Path, bert_no_dropout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live, cached = _pair(tmp_path, bert_no_dropout, max_steps=6, eval_every=3)
    assert "frozen features of 24 + 8 examples cached (memory" in capsys.readouterr().out
    assert len(losses(live.run_dir)) == 6
    assert losses(cached.run_dir) == pytest.approx(losses(live.run_dir), abs=1e-6)
    assert losses(live.run_dir)[-1] != losses(live.run_dir)[0]  # the head did train
    for a, b in zip(val_rows(live.run_dir), val_rows(cached.run_dir), strict=True):
        assert a["confusion_matrix"] == b["confusion_matrix"]


def test_decoder_head_on_cached_last_token_features(tmp_path: Path, tiny_llama: Path) -> None:
    live, cached = _pair(tmp_path, tiny_llama, max_steps=3)
    assert losses(cached.run_dir) == pytest.approx(losses(live.run_dir), abs=1e-6)


def test_disk_cache_is_reused_by_the_next_run(
    tmp_path: Path, bert_no_dropout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = []
    for name in ("first", "second"):
        extra = {"classify": {"cache_features": "disk"}, "train": {"run_name": name}}
        results.append(run(config(tmp_path, bert_no_dropout, "head", **extra)))
    out = capsys.readouterr().out
    assert out.count("read from disk") == 1  # the second run only
    assert len(list((tmp_path / "runs" / ".feature_cache").glob("*.safetensors"))) == 2
    assert losses(results[1].run_dir) == losses(results[0].run_dir)


def test_cache_features_is_for_head_mode_only(tmp_path: Path, bert_no_dropout: Path) -> None:
    with pytest.raises(ConfigError, match=r"read by classify\.mode=head only"):
        config(tmp_path, bert_no_dropout, "top_k", classify={"cache_features": "memory"})
