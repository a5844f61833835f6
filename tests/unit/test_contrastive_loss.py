"""The InfoNCE / multiple-negatives ranking loss against hand-worked numbers and against
sentence-transformers; retrieval metrics by hand; the pair reader's errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tunesmith.data.records import DataError
from tunesmith.data.retrieval_pairs import Pair, read_pairs, retrieval_set, with_mined_negatives
from tunesmith.eval.retrieval import retrieval_metrics
from tunesmith.losses.contrastive import multiple_negatives_ranking_loss

R = 1 / math.sqrt(2)  # cos((1, 0), (1, 1)) = cos((0, 1), (1, 1))


def lse(*xs: float) -> float:
    return math.log(sum(math.exp(x) for x in xs))


def test_in_batch_loss_matches_hand_worked_numbers() -> None:
    q = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # lengths do not matter: cosine
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # s = [[1, R], [0, R]] / tau; row i's target is column i.
    for tau in (1.0, 0.5):
        want = ((lse(1 / tau, R / tau) - 1 / tau) + (lse(0.0, R / tau) - R / tau)) / 2
        loss, m = multiple_negatives_ranking_loss(q, p, temperature=tau)
        assert loss.item() == pytest.approx(want, abs=1e-6)
        assert m["in_batch_accuracy"] == 1.0  # 1 > R and R > 0
        assert m["positive_margin"] == pytest.approx(((1 - R) + (R - 0)) / 2, abs=1e-6)


def test_hard_negatives_are_extra_columns_for_every_query() -> None:
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    n = torch.tensor([[0.0, -1.0], [0.0, 1.0]])  # the second beats query 2's own positive
    loss, m = multiple_negatives_ranking_loss(q, p, n, temperature=1.0)
    want = ((lse(1, R, 0, 0) - 1) + (lse(0, R, -1, 1) - R)) / 2
    assert loss.item() == pytest.approx(want, abs=1e-6)
    assert m["in_batch_accuracy"] == 0.5


def test_matches_sentence_transformers_mnrl() -> None:
    st = pytest.importorskip("sentence_transformers")
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    torch.manual_seed(0)
    q, p, n = torch.randn(6, 16), torch.randn(6, 16), torch.randn(6, 16)
    ref = MultipleNegativesRankingLoss(model=None, scale=20.0)  # type: ignore[arg-type]
    assert st is not None
    for negs in (None, n):
        reps = [q, p] + ([] if negs is None else [negs])
        want = ref.compute_loss_from_embeddings(reps, labels=None)
        got, _ = multiple_negatives_ranking_loss(q, p, negs, temperature=1 / 20)
        assert got.item() == pytest.approx(want.item(), abs=1e-5)


def test_loss_gradient_flows_to_all_three_inputs() -> None:
    q, p, n = (torch.randn(3, 8, requires_grad=True) for _ in range(3))
    loss, _ = multiple_negatives_ranking_loss(q, p, n)
    loss.backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (q, p, n))


def test_retrieval_metrics_by_hand() -> None:
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.5, 0.2],  # relevant {2}: rank 2
            [0.8, 0.7, 0.6, 0.5],  # relevant {0, 3}: ranks 1 and 4
        ]
    )
    m = retrieval_metrics(scores, [{2}, {0, 3}])
    assert m["recall@1"] == pytest.approx((0 + 0.5) / 2)
    assert m["recall@5"] == m["recall@10"] == 1.0
    assert m["mrr@10"] == pytest.approx((1 / 2 + 1) / 2)
    ndcg0 = (1 / math.log2(3)) / 1
    ndcg1 = (1 + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert m["ndcg@10"] == pytest.approx((ndcg0 + ndcg1) / 2)


def test_relevant_passage_past_rank_ten_scores_zero() -> None:
    scores = torch.arange(12, 0, -1, dtype=torch.float32)[None]  # passage i at rank i + 1
    m = retrieval_metrics(scores, [{11}])
    assert m["recall@10"] == m["mrr@10"] == m["ndcg@10"] == 0.0


def test_pair_reader_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    rows = [{"q": "a", "pos": "b"}, {"q": "c", "pos": "d", "neg": "e"}, {"q": "f"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as err:
        read_pairs(path, "q", "pos", "neg")
    assert f"{path}:3" in str(err.value) and "'pos'" in str(err.value)
    csv = tmp_path / "pairs.csv"
    csv.write_text("q,pos,neg\nhow,answer,\nwhy,because,not this\n")
    pairs = read_pairs(csv, "q", "pos", "neg")
    assert [(x.line, x.negative) for x in pairs] == [(2, None), (3, "not this")]


def test_eval_corpus_holds_every_passage_and_mining_skips_the_positive() -> None:
    train = [Pair("t", 1, "q1", "A"), Pair("t", 2, "q2", "B", "C")]
    held = [Pair("v", 1, "q3", "B"), Pair("v", 2, "q3", "D")]
    rs = retrieval_set(train, held)
    assert rs.queries == ["q3"] and sorted(rs.corpus) == ["A", "B", "C", "D"]
    assert rs.relevant == [{rs.corpus.index("B"), rs.corpus.index("D")}]
    scores = torch.tensor([[0.9, 0.5], [0.2, 0.8]])  # q1 ranks A first, q2 ranks B first
    mined = with_mined_negatives(train, scores, ["A", "B"])
    assert [x.negative for x in mined] == ["B", "A"]
