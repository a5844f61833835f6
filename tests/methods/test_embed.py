"""Retriever fine-tuning on a tiny random BERT: the run improves held-out recall@1 on its own
set, final/ loads in sentence-transformers with the same embeddings, LoRA is merged, mined
negatives are used, and bad data or config is refused with a clear error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tests.methods.test_classify import make_tiny_bert
from tunesmith.cli import main
from tunesmith.config import load_config
from tunesmith.examples.faq_retrieval import faq_pairs
from tunesmith.methods.embed import run
from tunesmith.models.sentence_encoder import embed_texts, load_sentence_encoder

TOPICS = [
    "refund invoice",
    "parcel courier",
    "password login",
    "screen crash",
    "battery charge",
    "account delete",
    "price plan",
    "storage space",
]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert", dropout=0.0)


def pair_rows(n: int, offset: int) -> list[dict[str, str]]:
    """Queries that name one word of a topic; the passage names both."""
    rows = []
    for i in range(n):
        a, b = TOPICS[i % len(TOPICS)].split()
        query = f"question {i + offset}: {a if i % 2 else b}?"
        rows.append({"query": query, "positive": f"help article about {a} {b}"})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def embed_config(tmp_path: Path, model: Path, **sections: dict[str, Any]) -> Path:
    cfg: dict[str, Any] = {
        "method": "embed",
        "model": {"name_or_path": str(model), "dtype": "float32"},
        "data": {
            "train": str(write_jsonl(tmp_path / "train.jsonl", pair_rows(32, 0))),
            "validation": str(write_jsonl(tmp_path / "test.jsonl", pair_rows(16, 100))),
            "max_length": 32,
        },
        "embed": {"mode": "full"},
        "train": {
            "output_dir": str(tmp_path / "runs"),
            "run_name": "run",
            "max_steps": 16,
            "micro_batch_size": 8,
            "precision": "fp32",
            "seed": 1,
        },
        "optim": {"lr": 1e-3},
        "lora": {"r": 4, "dropout": 0.0},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    path = tmp_path / "embed.yaml"
    path.write_text("# tunesmith train embed.yaml\n" + yaml.safe_dump(cfg))
    return path


def st_matches(final: Path, texts: list[str]) -> float:
    """Largest |difference| between sentence-transformers' and tunesmith's embeddings."""
    from sentence_transformers import SentenceTransformer

    theirs = torch.tensor(SentenceTransformer(str(final), device="cpu").encode(texts))
    step, tok = load_sentence_encoder(final)
    ours = embed_texts(step, tok, texts, 32)
    assert theirs.shape == ours.shape
    return float((theirs - ours).abs().max())


def test_full_run_improves_recall_and_reloads_in_sentence_transformers(
    tmp_path: Path, tiny_bert: Path
) -> None:
    result = run(load_config(embed_config(tmp_path, tiny_bert, train={"eval_every": 8})))
    report = json.loads((result.run_dir / "eval.json").read_text())
    before, after = report["before"], report["after"]
    assert before["queries"] == 16 and before["corpus"] == 8
    assert after["recall@1"] > before["recall@1"] + 0.2
    assert after["ndcg@10"] > before["ndcg@10"]
    assert after == result.after
    rows = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["split"], r["step"]) for r in rows if r["split"] == "val"] == [
        ("val", 0),
        ("val", 8),
        ("val", 16),
    ]
    assert (result.run_dir / "best" / "modules.json").is_file()
    texts = ["refund for my parcel", "a much longer question about passwords and login screens"]
    pytest.importorskip("sentence_transformers")
    assert st_matches(result.final_dir, texts) < 1e-5


def test_lora_run_saves_merged_weights_that_reload(tmp_path: Path, tiny_bert: Path) -> None:
    cfg = embed_config(
        tmp_path,
        tiny_bert,
        embed={"mode": "lora"},
        lora={"target_modules": "all-linear"},
        train={"max_steps": 4},
        optim={"lr": 1e-2},
    )
    result = run(load_config(cfg))
    assert not (result.final_dir / "adapter_config.json").exists()
    step, tok = load_sentence_encoder(result.final_dir)
    base, _ = load_sentence_encoder(tiny_bert)
    texts = ["refund please"]
    assert not torch.allclose(embed_texts(step, tok, texts, 32), embed_texts(base, tok, texts, 32))
    pytest.importorskip("sentence_transformers")
    assert st_matches(result.final_dir, texts) < 1e-5


def first_loss(run_dir: Path) -> float:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return next(r["loss"] for r in rows if r["split"] == "train")


def test_mined_hard_negatives_add_candidates(tmp_path: Path, tiny_bert: Path) -> None:
    """Step 1 sees the same weights and batch; mined negatives add a column per query to each
    softmax, so its loss is strictly higher than in-batch negatives alone."""
    losses = {}
    for kind in ("none", "mined"):
        cfg = embed_config(
            tmp_path,
            tiny_bert,
            embed={"hard_negatives": kind},
            train={"max_steps": 1, "run_name": kind},
        )
        losses[kind] = first_loss(run(load_config(cfg)).run_dir)
    assert losses["mined"] > losses["none"] + 1e-3


def test_bad_rows_and_unknown_keys_are_refused(
    tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = embed_config(tmp_path, tiny_bert)
    bad = write_jsonl(tmp_path / "bad.jsonl", [*pair_rows(3, 0), {"query": "no passage"}])
    assert main(["train", str(cfg), f"data.train={bad}"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:4" in err and "positive" in err
    assert not (tmp_path / "runs" / "run").exists()
    assert main(["validate", str(cfg), "data.packing=true"]) == 2
    assert "unknown key 'data.packing' for method embed" in capsys.readouterr().err


def test_shipped_faq_set_is_the_generator_output() -> None:
    train, test = faq_pairs()
    for name, rows in (("train", train), ("test", test)):
        shipped = (REPO / "data" / "embed" / f"{name}.jsonl").read_text().splitlines()
        assert [json.loads(x) for x in shipped] == rows
    assert len(train) == 240 and len(test) == 120
    assert len({r["positive"] for r in train}) == 60
