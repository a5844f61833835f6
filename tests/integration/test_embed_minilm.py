"""Retriever fine-tuning of the packaged all-MiniLM-L6-v2 on the shipped FAQ set: held-out
retrieval improves over the base model, and final/ reloads in sentence-transformers with the
same embeddings (and the base directory itself matches sentence-transformers too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tunesmith.cli import main
from tunesmith.models.encoders import encoder_dir
from tunesmith.models.sentence_encoder import embed_texts, load_sentence_encoder

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
TEXTS = ["How much is my HB plan?", "The Summit plan costs $29 per month, billed monthly."]


def st_vs_ours(path: Path) -> float:
    from sentence_transformers import SentenceTransformer

    theirs = torch.tensor(SentenceTransformer(str(path), device="cpu").encode(TEXTS))
    step, tok = load_sentence_encoder(path)
    return float((theirs - embed_texts(step, tok, TEXTS, 64)).abs().max())


def test_minilm_embed_improves_faq_retrieval(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    assert st_vs_ours(encoder_dir("all-minilm-l6-v2")) < 1e-5
    recipe = REPO / "configs" / "all-minilm-l6-v2" / "embed_full.yaml"
    args = [
        f"data.train={REPO / 'data/embed/train.jsonl'}",
        f"data.validation={REPO / 'data/embed/test.jsonl'}",
        f"train.output_dir={tmp_path}",
        "train.run_name=r",
        "train.max_steps=8",
    ]
    assert main(["train", str(recipe), *args]) == 0
    report = json.loads((tmp_path / "r" / "eval.json").read_text())
    assert report["before"]["recall@1"] < 0.8  # the shipped set is hard for the base model
    assert report["after"]["ndcg@10"] > report["before"]["ndcg@10"] + 0.05
    assert st_vs_ours(tmp_path / "r" / "final") < 1e-5
