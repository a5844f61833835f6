"""Classification on cached frozen features (head mode: the input of the head; top_k: the
states below the first trained layer) equals the uncached path, step for step."""

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


def _pair(tmp_path: Path, model: Path, mode: str = "head", **train: Any) -> tuple[Any, Any]:
    runs = {}
    for cache in ("none", "memory"):
        extra = {"classify": {"cache_features": cache}, "train": {"run_name": cache, **train}}
        runs[cache] = run(config(tmp_path, model, mode, **extra))
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


def test_cache_features_is_for_head_and_top_k_modes_only(
    tmp_path: Path, bert_no_dropout: Path
) -> None:
    for mode in ("full", "lora"):
        with pytest.raises(ConfigError, match=r"read by classify\.mode=head or top_k only"):
            config(tmp_path, bert_no_dropout, mode, classify={"cache_features": "memory"})


@pytest.mark.parametrize("backbone", ["bert_no_dropout", "tiny_llama"])
def test_cached_top_k_training_equals_the_live_backbone(
    tmp_path: Path,
    backbone: str,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The encoder (padding mask) and the decoder (causal mask, rotary positions, last-token
    pooling) top layers on cached states: the live run's losses and evaluations."""
    model = request.getfixturevalue(backbone)
    live, cached = _pair(tmp_path, model, "top_k", max_steps=4, eval_every=2)
    out = capsys.readouterr().out
    assert "classify top_k: frozen features of 24 + 8 examples cached (memory" in out
    assert "only the top 1 layer(s) and the head run each step" in out
    assert len(losses(live.run_dir)) == 4
    assert losses(cached.run_dir) == pytest.approx(losses(live.run_dir), abs=1e-6)
    assert losses(live.run_dir)[-1] != losses(live.run_dir)[0]  # the top layer and head trained
    for a, b in zip(val_rows(live.run_dir), val_rows(cached.run_dir), strict=True):
        assert a["confusion_matrix"] == b["confusion_matrix"]
        assert a["macro_f1"] == pytest.approx(b["macro_f1"], abs=1e-9)


def test_top_k_on_a_layout_not_rebuilt_runs_live(
    tmp_path: Path, tiny_gemma: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Gemma 3 wants a rotary embedding per layer type: the check against the full model fails
    before any data is encoded, and the run trains on the live backbone."""
    result = run(config(tmp_path, tiny_gemma, "top_k", train={"max_steps": 2}))
    out = capsys.readouterr().out
    assert "the top_k cache rebuilds BERT-style encoders and Llama-style decoders, not " in out
    assert "gemma3_text; not cached, the backbone runs every step" in out
    assert "frozen features of" not in out
    assert len(losses(result.run_dir)) == 2


def test_top_k_disk_cache_is_keyed_apart_from_head_mode(
    tmp_path: Path, bert_no_dropout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The states below layer L-k and the input of the head are different files; a second
    top_k run reads its states back and trains the same."""
    results = []
    for mode, name in (("head", "head"), ("top_k", "first"), ("top_k", "second")):
        extra = {"classify": {"cache_features": "disk"}, "train": {"run_name": name}}
        results.append(run(config(tmp_path, bert_no_dropout, mode, **extra)))
    assert capsys.readouterr().out.count("read from disk") == 1  # the second top_k run only
    assert len(list((tmp_path / "runs" / ".feature_cache").glob("*.safetensors"))) == 4
    assert losses(results[2].run_dir) == losses(results[1].run_dir)
