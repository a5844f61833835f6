"""``tunesmith doctor`` for ``method: embed``: the retrieval-pair checks (checks/embed.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.methods.test_classify import make_tiny_bert
from tests.methods.test_embed import embed_config, write_jsonl
from tunesmith.checks.embed import collision_chance
from tunesmith.cli import main


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert", dropout=0.0)


def test_collision_chance_by_hand() -> None:
    # 4 pairs, two share a positive, batches of 2: 1 of the C(4,2) = 6 batches holds both
    assert collision_chance([2], 4, 2) == pytest.approx(1 / 6)
    assert collision_chance([2], 4, 4) == pytest.approx(1.0)  # the whole set in one batch
    assert collision_chance([3], 3, 2) == pytest.approx(1.0)
    assert collision_chance([2], 10, 1) == 0.0


def rows() -> list[dict[str, str]]:
    out = [{"query": f"question {i} about topic {i}", "positive": f"answer {i} for topic {i}"}
           for i in range(8)]  # fmt: skip
    out[2]["positive"] = out[2]["query"]  # line 3: identical
    out[5]["positive"] = out[4]["positive"]  # lines 5 and 6 share a passage
    out[6]["positive"], out[7]["positive"] = "word " * 80, "term " * 80  # over max_length
    return out


def test_doctor_checks_pairs_duplicates_identical_and_truncation(
    tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = embed_config(tmp_path, tiny_bert, train={"micro_batch_size": 4})
    train = write_jsonl(tmp_path / "train.jsonl", rows())
    html = tmp_path / "doctor.html"
    args = ["doctor", str(cfg), f"data.train=[{train}]", "--html", str(html)]
    assert main(args) == 0  # warnings only
    out = capsys.readouterr().out
    lines = {line.split()[1].rstrip(":"): line for line in out.splitlines() if "  " in line[:6]
             and line.split()[0] in ("PASS", "WARN", "FAIL")}  # fmt: skip
    # truncation counts train and held-out texts: 2 of 8 + 16 positives are too long
    assert "8 train / 16 held-out pairs" in lines["pairs"] and "PASS" in lines["pairs"]
    assert "WARN" in lines["identical-pairs"] and f"{train}:3" in lines["identical-pairs"]
    dup = lines["duplicate-positives"]
    assert "WARN" in dup and f"{train}:5, {train}:6" in dup
    assert f"~{collision_chance([2], 8, 4):.0%} of 4-pair batches" in dup
    assert "WARN" in lines["truncation"] and "positives 8% (longest 82)" in lines["truncation"]
    assert f"{train}:1 query" in out  # the rendered examples name file, line and side
    assert html.is_file()


def test_doctor_fails_a_step_with_nothing_to_contrast_and_an_empty_query(
    tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = embed_config(tmp_path, tiny_bert)
    one = ["doctor", str(cfg), "train.micro_batch_size=1", "embed.hard_negatives=none"]
    assert main([*one, "--html", str(tmp_path / "a.html")]) == 1
    assert "one pair per batch and embed.hard_negatives=none" in capsys.readouterr().out
    bad = rows()
    bad[3]["query"] = " "
    train = write_jsonl(tmp_path / "bad.jsonl", bad)
    args = ["doctor", str(cfg), f"data.train=[{train}]", "--html", str(tmp_path / "b.html")]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and f"{train}:4" in out and "query" in out
    assert json.loads(train.read_text().splitlines()[3])["query"] == " "


def test_train_runs_the_same_checks_before_starting(
    tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = embed_config(tmp_path, tiny_bert)
    assert main(["train", str(cfg), "train.micro_batch_size=1", "embed.hard_negatives=none"]) == 2
    err = capsys.readouterr().err
    assert "pre-flight checks failed" in err and "FAIL pairs:" in err
    assert not (tmp_path / "runs" / "run").exists()  # refused before the run dir was kept
