"""``tunesmith prune`` through the real CLI on tiny 4-layer Llama and Gemma3 models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from tests.helpers.tiny_model import tiny_config
from tests.helpers.tiny_tokenizer import make_tiny_tokenizer
from tunesmith.cli import main
from tunesmith.compress.prune import angular_distance, choose_layers, layer_scores


def _four_layer_model(root: Path, arch: str) -> Path:
    tok = make_tiny_tokenizer()
    cfg = tiny_config(arch, len(tok), tok.pad_token_id, tok.eos_token_id, tok.bos_token_id)
    cfg.num_hidden_layers = 4
    if getattr(cfg, "layer_types", None) is not None:
        cfg.layer_types = ["sliding_attention", "full_attention"] * 2
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    out = root / arch
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_angular_distance_hand_values() -> None:
    x = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]]])
    y = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]])
    assert torch.allclose(angular_distance(x, y), torch.tensor([[0.0, 0.5, 1.0]]), atol=1e-4)


def test_choose_layers_lowest_scores() -> None:
    assert choose_layers([0.3, 0.1, 0.2, 0.05], 2) == [1, 3]
    with pytest.raises(Exception, match="drop between 1 and 3"):
        choose_layers([0.3, 0.1, 0.2, 0.05], 4)


def test_identity_block_scores_zero(tmp_path: Path) -> None:
    """A block whose output equals its input (zeroed output projections) scores 0."""
    model = AutoModelForCausalLM.from_pretrained(_four_layer_model(tmp_path, "llama"))
    with torch.no_grad():
        model.model.layers[2].self_attn.o_proj.weight.zero_()
        model.model.layers[2].mlp.down_proj.weight.zero_()
    batch = {"input_ids": torch.randint(0, 100, (2, 7)), "attention_mask": torch.ones(2, 7)}
    scores = layer_scores(model, [batch])
    assert scores[2] < 1e-4 < min(scores[0], scores[1], scores[3])
    assert choose_layers(scores, 1) == [2]


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_prune_cli_writes_loadable_model_and_report(tmp_path: Path, arch: str) -> None:
    src = _four_layer_model(tmp_path, arch)
    calib = tmp_path / "calib.jsonl"
    rows = [{"text": f"The number {i} is followed by {i + 1} and then {i + 2}."} for i in range(8)]
    calib.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "pruned"
    assert main(["prune", str(src), "--drop-layers", "2", "--calibration", str(calib),
                 "--out", str(out), "--device", "cpu"]) == 0  # fmt: skip
    report = json.loads((out / "prune_report.json").read_text())
    assert len(report["scores"]) == 4 and len(report["dropped"]) == 2
    assert report["after"]["params"] < report["before"]["params"]
    assert report["after"]["bytes"] < report["before"]["bytes"]
    assert report["held_out_texts"] == 2
    assert "layer-scores" in (out / "prune_report.html").read_text()
    config = AutoConfig.from_pretrained(out)
    assert config.num_hidden_layers == 2
    if arch == "gemma3_text":
        full = ["sliding_attention", "full_attention"] * 2
        kept = [i for i in range(4) if i not in report["dropped"]]
        assert config.layer_types == [full[i] for i in kept]
    # The kept blocks are the original ones, unchanged: compare one kept block's weights.
    original = AutoModelForCausalLM.from_pretrained(src)
    pruned = AutoModelForCausalLM.from_pretrained(out)
    kept = [i for i in range(4) if i not in report["dropped"]]
    assert torch.equal(
        pruned.model.layers[1].mlp.up_proj.weight, original.model.layers[kept[1]].mlp.up_proj.weight
    )
    ids = torch.tensor([[1, 5, 9, 12]])
    out_ids = pruned.generate(ids, max_new_tokens=3, do_sample=False)  # KV cache works
    assert out_ids.shape == (1, 7)


def test_prune_bad_calibration_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _four_layer_model(tmp_path, "llama")
    calib = tmp_path / "calib.jsonl"
    calib.write_text('{"text": "ok"}\n{"oops": 1}\n')
    code = main(["prune", str(src), "--drop-layers", "1", "--calibration", str(calib),
                 "--out", str(tmp_path / "o")])  # fmt: skip
    assert code == 2
    assert "calib.jsonl:2" in capsys.readouterr().err
