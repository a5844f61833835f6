"""``run_prep`` end to end on small files: accounting, leakage, test-file overlap, errors."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from tunesmith.config import ConfigError, load_model
from tunesmith.data.records import DataError
from tunesmith.prep import PrepConfig, run_prep
from tunesmith.prep.tokens import TokenizerCounter

VOCAB = [f"w{i}" for i in range(400)]


def sentence(rng: random.Random, n: int = 30) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def row(user: str, answer: str, **meta: Any) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
        **meta,
    }


def write(path: Path, rows: list[Any]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def prep(tmp_path: Path, inputs: list[Any], **cfg: Any) -> dict[str, Any]:
    config = PrepConfig.model_validate(
        {"inputs": inputs, "output_dir": str(tmp_path / "out"), "progress": False, **cfg}
    )
    return run_prep(config).report


def outputs(tmp_path: Path) -> dict[str, list[dict[str, Any]]]:
    names = ("train", "validation", "test", "rejects")
    return {n: read(tmp_path / "out" / f"{n}.jsonl") for n in names}


def pairs_data(tmp_path: Path, n_pairs: int = 30) -> tuple[Path, list[tuple[int, int]]]:
    """``n_pairs`` near-duplicate pairs (second = first + one word), shuffled; their lines."""
    rng = random.Random(0)
    rows = []
    for i in range(n_pairs):
        base = row(sentence(rng, 8), sentence(rng), task=f"t{i % 3}")
        near = row(
            base["messages"][0]["content"],
            base["messages"][1]["content"] + " more",
            task=base["task"],
        )
        rows += [("a", i, base), ("b", i, near)]
    rng.shuffle(rows)
    rows.sort(key=lambda r: r[0] == "b")  # every copy after every original
    lines = {(kind, i): n + 1 for n, (kind, i, _) in enumerate(rows)}
    path = write(tmp_path / "pairs.jsonl", [r for _, _, r in rows])
    return path, [(lines[("a", i)], lines[("b", i)]) for i in range(n_pairs)]


def split_by_line(outs: dict[str, list[dict[str, Any]]]) -> dict[int, str]:
    return {r["line"]: name for name in ("train", "validation", "test") for r in outs[name]}


def test_nothing_is_lost_and_records_are_canonical(tmp_path: Path) -> None:
    rng = random.Random(1)
    rows = [row(sentence(rng, 6), sentence(rng), task="a") for _ in range(40)]
    rows += [rows[0], row("q", ""), "{broken", row("q", "As an AI language model I cannot.")]
    report = prep(tmp_path, [str(write(tmp_path / "in.jsonl", rows))], on_error="skip")
    outs = outputs(tmp_path)
    kept = sum(len(outs[n]) for n in ("train", "validation", "test"))
    assert kept + len(outs["rejects"]) == len(rows) == report["counts"]["input"]
    assert sorted(r["line"] for n in outs for r in outs[n]) == list(range(1, len(rows) + 1))
    assert {r["rule"] for r in outs["rejects"]} == {
        "exact_duplicate",
        "empty",
        "malformed",
        "refusal",
    }
    first = outs["train"][0]
    assert set(first) == {"source", "line", "messages", "meta"} and first["meta"] == {"task": "a"}
    assert not list((tmp_path / "out").glob(".prep-*"))  # work files cleaned up


def test_leakage_fix_when_near_dedup_is_off(tmp_path: Path) -> None:
    path, pairs = pairs_data(tmp_path)
    ratios = {"train": 0.5, "validation": 0.25, "test": 0.25}
    off = {"dedup": {"near": False}, "splits": {"ratios": ratios, "leakage_check": False}}
    prep(tmp_path, [str(path)], **off)
    where = split_by_line(outputs(tmp_path))
    assert sum(where[a] != where[b] for a, b in pairs) > 0  # without the check, pairs leak
    on = {"dedup": {"near": False}, "splits": {"ratios": ratios}}
    report = prep(tmp_path, [str(path)], **on)
    where = split_by_line(outputs(tmp_path))
    assert len(where) == 2 * len(pairs)  # nothing removed
    assert all(where[a] == where[b] for a, b in pairs)
    assert report["leakage"]["moved_total"] > 0 and report["leakage"]["duplicate_links"] >= 30
    assert report["removed_by_rule"]["near_duplicate"] == 0


def test_near_dedup_removes_the_later_copy(tmp_path: Path) -> None:
    path, pairs = pairs_data(tmp_path, 10)
    report = prep(tmp_path, [str(path)])
    rejects = outputs(tmp_path)["rejects"]
    assert report["removed_by_rule"]["near_duplicate"] == 10
    assert sorted((r["of"]["line"], r["line"]) for r in rejects) == sorted(pairs)
    assert all(r["similarity"] >= 0.8 for r in rejects)


def test_exact_copies_fall_to_near_dedup_when_exact_is_off(tmp_path: Path) -> None:
    rng = random.Random(2)
    base = row(sentence(rng, 5), sentence(rng))
    path = write(tmp_path / "in.jsonl", [base, row(sentence(rng, 5), sentence(rng)), base])
    report = prep(tmp_path, [str(path)], dedup={"exact": False})
    assert report["removed_by_rule"]["exact_duplicate"] == 0
    assert report["removed_by_rule"]["near_duplicate"] == 1


def test_test_file_overlap_is_removed_even_without_dedup(tmp_path: Path) -> None:
    rng = random.Random(3)
    held = [row(sentence(rng, 5), sentence(rng)) for _ in range(3)]
    test_file = write(tmp_path / "held.jsonl", held)
    near = row(held[1]["messages"][0]["content"], held[1]["messages"][1]["content"] + " too")
    upper = row(held[0]["messages"][0]["content"].upper(), held[0]["messages"][1]["content"])
    rows = [row(sentence(rng, 5), sentence(rng)) for _ in range(5)] + [upper, near]
    path = write(tmp_path / "in.jsonl", rows)
    report = prep(
        tmp_path,
        [str(path)],
        dedup={"exact": False, "near": False},
        splits={"test_file": str(test_file)},
    )
    rejects = outputs(tmp_path)["rejects"]
    assert {(r["line"], r["rule"], r["of"]["line"]) for r in rejects} == {
        (6, "test_overlap", 1),
        (7, "test_overlap", 2),
    }
    assert report["leakage"]["test_file_rows"] == 3 and report["counts"]["input"] == 7


def test_tags_from_rows_and_files(tmp_path: Path) -> None:
    rng = random.Random(4)
    a = write(tmp_path / "a.jsonl", [row(sentence(rng, 5), sentence(rng)) for _ in range(4)])
    b = write(
        tmp_path / "b.jsonl", [row(sentence(rng, 5), sentence(rng), task="own") for _ in range(3)]
    )
    c = write(tmp_path / "c.jsonl", [{"text": sentence(rng)} for _ in range(2)])
    report = prep(
        tmp_path,
        [{"path": str(a), "tag": "file-a"}, {"path": str(b), "tag": "x"}, str(c)],
        balance={"cap_per_tag": 3},
    )
    tags = report["tags"]
    assert {t: v["input"] for t, v in tags.items()} == {"file-a": 4, "own": 3, "untagged": 2}
    assert tags["file-a"]["kept"] == 3 and tags["file-a"]["capped"] == 1
    assert report["removed_by_rule"]["cap"] == 1


def test_malformed_rows_raise_with_file_line_and_field(tmp_path: Path) -> None:
    bad = {"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}]}
    path = write(tmp_path / "in.jsonl", [row("a", "b c d"), bad])
    with pytest.raises(DataError) as err:
        prep(tmp_path, [str(path)])
    assert f"{path}:2" in str(err.value) and "messages[1].role" in str(err.value)
    assert not (tmp_path / "out" / "train.jsonl").exists()  # nothing half-written
    path = write(tmp_path / "in2.jsonl", [row("a", "b c d"), "{not json"])
    with pytest.raises(DataError, match=r"in2\.jsonl:2.*invalid JSON"):
        prep(tmp_path, [str(path)])


def test_pii_is_scrubbed_everywhere_and_only_counted(tmp_path: Path) -> None:
    rows = [
        row("mail me at a.b@example.com please", "I will write to you tomorrow morning."),
        row("q", "As an AI language model I cannot call 555-123-4567 for you."),
        '{"messages": [{"role": "user", "content": "key sk-proj-Ab3dE5fG7hJ9kL1mN3pQ5rS7"',
    ]
    path = write(tmp_path / "in.jsonl", rows)
    report = prep(tmp_path, [str(path)], on_error="skip", pii={"fields": ["user", "assistant"]})
    blob = "".join(p.read_text() for p in (tmp_path / "out").iterdir())
    for secret in ("a.b@example.com", "555-123-4567", "sk-proj-Ab3dE5fG7hJ9kL1mN3pQ5rS7"):
        assert secret not in blob
    assert "<EMAIL>" in blob and "<PHONE>" in blob and "<SECRET>" in blob
    assert report["pii"]["replaced"]["email"] == 1 and report["pii"]["records_with_pii"] == 2


def test_token_counts_with_a_tokenizer(tmp_path: Path, tiny_tokenizer: Any) -> None:
    rng = random.Random(5)
    path = write(
        tmp_path / "in.jsonl", [row(sentence(rng, 5), sentence(rng, 10)) for _ in range(6)]
    )
    config = PrepConfig.model_validate(
        {
            "inputs": [str(path)],
            "max_length": 30,
            "output_dir": str(tmp_path / "out"),
            "progress": False,
        }
    )
    report = run_prep(config, TokenizerCounter(tiny_tokenizer, "chatml", "tokenizer:tiny")).report
    # 15 words are well over 30 tokens once templated and split into subwords.
    assert report["token_counter"] == "tokenizer:tiny"
    assert report["removed_by_rule"]["too_long"] == 6


def test_config_errors_name_line_and_nearest_key(tmp_path: Path) -> None:
    cfg = tmp_path / "prep.yaml"
    cfg.write_text("inputs: [a.jsonl]\ndedup:\n  treshold: 0.7\n")
    with pytest.raises(ConfigError) as err:
        load_model(PrepConfig, cfg)
    assert f"{cfg}:3" in str(err.value) and "did you mean 'dedup.threshold'" in str(err.value)
    cfg.write_text(
        "inputs: [a.jsonl]\nsplits:\n  ratios: {train: 0.5, validation: 0.1, test: 0.1}\n"
    )
    with pytest.raises(ConfigError, match="must sum to 1"):
        load_model(PrepConfig, cfg)
    loaded = load_model(PrepConfig, cfg, ["splits.ratios.train=0.8", "pii.fields=[user]"])
    assert loaded.inputs[0].path == "a.jsonl" and loaded.pii.fields == ["user"]
