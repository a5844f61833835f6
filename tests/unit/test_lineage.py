"""Lineage through the real CLI: raw data -> prep -> train -> final -> merge -> GGUF export, and
--verify naming each recorded file that changed or went missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.runs import train, write_chat_data, write_config
from tunesmith.cli import main
from tunesmith.engine import lineage
from tunesmith.engine.lineage_verify import chain, load_node


@pytest.fixture(scope="module")
def merged_chain(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> dict[str, Path]:
    """prep on a raw file, a LoRA run on its train split, the merged model and its GGUF."""
    tmp = tmp_path_factory.mktemp("lineage")
    raw = write_chat_data(tmp / "raw.jsonl", n=48)
    prepared = tmp / "prepared"
    prep_cfg = tmp / "prep.yaml"
    prep_cfg.write_text(f"inputs: [{raw}]\noutput_dir: {prepared}\nprogress: false\n")
    assert main(["prep", str(prep_cfg)]) == 0
    cfg = write_config(tmp, tiny_llama, prepared / "train.jsonl", train={"max_steps": 2})
    run = train(cfg)
    assert main(["merge", str(run), "--prompts", "1"]) == 0
    gguf = tmp / "gguf"
    assert main(["export", str(run / "merged"), "--format", "gguf", "--quant", "f16",
                 "--out", str(gguf), "--device", "cpu", "--prompts", "1"]) == 0  # fmt: skip
    return {"raw": raw, "prepared": prepared, "run": run, "merged": run / "merged", "gguf": gguf}


def test_every_artefact_records_its_inputs_and_the_chain_reaches_raw_data(
    merged_chain: dict[str, Path], tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prep = load_node(merged_chain["prepared"])
    train_file = merged_chain["prepared"] / "train.jsonl"
    assert prep["kind"] == "prep" and prep["inputs"][0]["path"] == str(merged_chain["raw"])
    made = {o["path"]: o["sha256"] for o in prep["outputs"]}
    assert made["train.jsonl"] == lineage.sha256_file(train_file)

    run = load_node(merged_chain["run"])
    roles = {i["role"] for i in run["inputs"]}
    assert roles == {"data", "base_model"} and len(run["config_sha256"]) == 64
    weights = tiny_llama / "model.safetensors"
    assert {"path": str(weights), "sha256": lineage.sha256_file(weights)}.items() <= next(
        i for i in run["inputs"] if i["path"] == str(weights)
    ).items()
    assert run["code"]["tunesmith"] and [p["kind"] for p in run["parents"]] == ["prep"]

    kinds = [n["kind"] for n in chain(load_node(merged_chain["merged"]))]
    assert kinds == ["prep", "train", "final", "merge"]

    exported = load_node(merged_chain["gguf"])
    kinds = [n["kind"] for n in chain(exported)]
    assert kinds == ["prep", "train", "final", "merge", "export-gguf-f16"]
    gguf_file = merged_chain["gguf"] / "model-f16.gguf"
    made = {o["path"]: o["sha256"] for o in exported["outputs"]}
    assert made == {
        "model-f16.gguf": lineage.sha256_file(gguf_file),
        "Modelfile": lineage.sha256_file(merged_chain["gguf"] / "Modelfile"),
    }
    assert {i["role"] for i in exported["inputs"]} == {"model"}
    assert main(["lineage", str(merged_chain["gguf"])]) == 0
    printed = capsys.readouterr().out
    stages = ("prep", "train", "final", "merge", "export-gguf-f16")
    order = [printed.index(f"{k}  ") for k in stages]
    assert order == sorted(order) and str(merged_chain["raw"]) in printed


def _flip_byte(path: Path, at: int = 10) -> bytes:
    """Flip one bit of one byte of ``path``; returns the original bytes."""
    original = path.read_bytes()
    changed = bytearray(original)
    changed[at] ^= 1
    path.write_bytes(bytes(changed))
    return original


def _flagged(out: str) -> list[list[str]]:
    findings = out.split("\nverify:", 1)[1].splitlines()[1:]
    return [line.split()[:2] for line in findings]


@pytest.mark.parametrize("artefact", ["merged", "gguf"])
def test_verify_names_the_prep_output_that_changed_by_one_byte(
    merged_chain: dict[str, Path], capsys: pytest.CaptureFixture[str], artefact: str
) -> None:
    """prep's train.jsonl (a prep output, the run's input) changed, the raw file moved away:
    --verify on the merged model and on the exported GGUF names both, and nothing else."""
    target = str(merged_chain[artefact])
    assert main(["lineage", target, "--verify"]) == 0
    assert " 0 differ" in capsys.readouterr().out

    train_file = merged_chain["prepared"] / "train.jsonl"
    original = _flip_byte(train_file)
    try:
        merged_chain["raw"].rename(merged_chain["raw"].with_suffix(".moved"))
        assert main(["lineage", target, "--verify"]) == 1
        flagged = _flagged(capsys.readouterr().out)
        assert ["CHANGED", str(train_file)] in flagged
        assert ["MISSING", str(merged_chain["raw"])] in flagged
        assert len(flagged) == 2  # nothing else is named
    finally:
        train_file.write_bytes(original)
        merged_chain["raw"].with_suffix(".moved").rename(merged_chain["raw"])


def test_verify_names_the_exported_gguf_that_changed(
    merged_chain: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    gguf_file = merged_chain["gguf"] / "model-f16.gguf"
    original = _flip_byte(gguf_file, at=gguf_file.stat().st_size - 3)  # a weight byte
    try:
        assert main(["lineage", str(merged_chain["gguf"]), "--verify"]) == 1
        assert _flagged(capsys.readouterr().out) == [["CHANGED", str(gguf_file)]]
    finally:
        gguf_file.write_bytes(original)


def test_model_hashes_are_cached_by_path_size_and_mtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(lineage, "CACHE_MIN_BYTES", 0)
    calls: list[Path] = []
    real = lineage.sha256_file
    monkeypatch.setattr(lineage, "sha256_file", lambda p: calls.append(p) or real(p))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x" * 1000)
    first = lineage.cached_sha256(weights)
    assert lineage.cached_sha256(weights) == first and len(calls) == 1  # second: from the cache
    weights.write_bytes(b"y" * 1001)  # new content, new size
    assert lineage.cached_sha256(weights) == real(weights) != first and len(calls) == 2
    assert len(json.loads((tmp_path / "cache" / lineage.HASH_CACHE_FILE).read_text())) == 1


def test_a_path_without_lineage_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lineage", str(tmp_path)]) == 2
    assert "no lineage.json" in capsys.readouterr().err
