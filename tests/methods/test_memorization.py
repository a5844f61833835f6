"""The memorisation probe: prep plants canaries and records them; a tiny model overfitted on
canary-bearing data exposes them (exposure rises against its untrained base); regurgitation and
PII are reported; memorization.json feeds the run report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from tests.helpers.runs import write_chat_data
from tunesmith.cli import main
from tunesmith.eval.memorization import exposure, pii_found, token_edit_distance
from tunesmith.prep.canaries import CANARIES_FILE, plant_canaries

REPO = Path(__file__).resolve().parents[2]


def test_exposure_and_edit_distance_by_hand() -> None:
    assert exposure(1.0, [2.0, 3.0, 4.0]) == (1, 2.0)  # first of 4: log2 4 - log2 1
    rank, exp = exposure(3.5, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])  # 3 better: rank 4 of 8
    assert rank == 4 and exp == pytest.approx(math.log2(8) - 2)
    assert token_edit_distance([1, 2, 3], [1, 2, 3]) == 0
    assert token_edit_distance([1, 2, 3], [1, 3]) == 1
    assert token_edit_distance([1, 2, 3], [3, 2, 1]) == 2
    found = pii_found(["mail me at ann@example.com", "nothing here", "ip 10.0.0.1"])
    assert found["with_pii"] == 2 and found["by_type"] == {"email": 1, "ip_address": 1}


def test_prep_plants_canaries_and_records_them(tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    args = [
        "prep",
        str(REPO / "configs" / "prep" / "example.yaml"),
        f"output_dir={out}",
        f"inputs.0.path={REPO / 'data/examples/prep/raw.jsonl'}",
        f"splits.test_file={REPO / 'data/examples/prep/test.jsonl'}",
        "progress=false",
        "--canaries",
        "3",
    ]
    assert main(args) == 0
    manifest = json.loads((out / CANARIES_FILE).read_text())
    rows = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    planted = rows[-3:]
    for c, row in zip(manifest["canaries"], planted, strict=True):
        reply = row["messages"][1]["content"]
        assert reply == manifest["reply"].format(name=c["name"], secret=c["secret"])
        assert len(c["secret"]) == manifest["secret_length"] and c["secret"].isdigit()
    secrets = {c["secret"] for c in manifest["canaries"]}
    for split in ("validation.jsonl", "test.jsonl"):
        text = (out / split).read_text()
        assert not any(s in text for s in secrets)


def test_overfitted_model_exposes_its_canaries(tmp_path: Path, tiny_llama: Path) -> None:
    data = tmp_path / "prepared"
    data.mkdir()
    write_chat_data(data / "train.jsonl", n=12, seed=0)
    write_chat_data(data / "validation.jsonl", n=8, seed=1)
    plant_canaries(data, 2, seed=7)
    cfg = {
        "model": {"name_or_path": str(tiny_llama)},
        "data": {
            "train": str(data / "train.jsonl"),
            "validation": str(data / "validation.jsonl"),
            "max_length": 160,
        },
        "adapter": {"type": "full"},
        "train": {
            "output_dir": str(tmp_path / "runs"),
            "run_name": "overfit",
            "max_steps": 80,
            "micro_batch_size": 7,
            "precision": "fp32",
            "seed": 0,
        },
        "optim": {"lr": 1e-2, "warmup_steps": 0},
    }
    path = tmp_path / "sft.yaml"
    path.write_text("# tunesmith train sft.yaml\n" + yaml.safe_dump(cfg))
    assert main(["train", str(path)]) == 0
    run = tmp_path / "runs" / "overfit"
    assert main(["probe", "memorization", str(run), "--candidates", "127", "--examples", "8"]) == 0
    result = json.loads((run / "memorization.json").read_text())
    tuned, base = result["tuned"], result["base"]
    assert result["canaries_file"] == str(data / CANARIES_FILE)
    assert len(tuned["canaries"]) == len(base["canaries"]) == 2
    # Memorised: each canary ranks first of 128 (exposure log2 128 = 7); the base ranks at random.
    assert tuned["mean_exposure"] > 5.0
    assert tuned["mean_exposure"] > base["mean_exposure"] + 3.0
    assert result["exposure_gain"] == pytest.approx(tuned["mean_exposure"] - base["mean_exposure"])
    assert tuned["train"]["examples"] == 8 and tuned["held_out"]["examples"] == 8
    assert tuned["train"]["near_rate"] >= tuned["train"]["exact_rate"]
    assert tuned["train"]["exact_rate"] > base["train"]["exact_rate"]
    assert set(tuned["pii"]) == {"generations", "with_pii", "by_type"}
    html = run / "report.html"
    assert main(["report", str(run), "--out", str(html)]) == 0
    assert "Memorization" in html.read_text()
