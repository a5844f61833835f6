"""Classifier fine-tuning on tiny random backbones: each mode trains what it says, the run
reports held-out metrics beside the majority baseline, and final/ loads back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, BertConfig

from tunesmith.cli import main
from tunesmith.config import load_config
from tunesmith.config.classify import ClassifyDataSection
from tunesmith.data.labelled import (
    LabelError,
    collate,
    encode,
    prepare_classify_data,
    read_labelled,
)
from tunesmith.data.records import DataError
from tunesmith.methods.classify import ClassifierStep, load_classifier, predict, run
from tunesmith.models.encoders import encoder_dir

WORDS = {"billing": "refund invoice charge", "shipping": "parcel courier late"}


def make_tiny_bert(out: Path, dropout: float = 0.1) -> Path:
    """A 2-layer random BERT with MiniLM's (offline, packaged) WordPiece tokenizer."""
    cfg = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    torch.manual_seed(0)
    AutoModel.from_config(cfg).save_pretrained(out)
    src = encoder_dir("all-minilm-l6-v2")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / name, out / name)
    return out


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert")


def write_rows(path: Path, n: int, labels: tuple[str, ...] = ("billing", "shipping")) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            label = labels[i % len(labels)]
            words = WORDS.get(label, label).split()
            fh.write(
                json.dumps({"body": f"ticket {i}: {words[i % len(words)]} please", "topic": label})
                + "\n"
            )
    return path


def config_file(tmp_path: Path, model: Path, mode: str, **extra: Any) -> Path:
    """A classify config on 24 train / 8 validation rows; ``extra`` merges into its sections."""
    train = write_rows(tmp_path / "train.jsonl", 24)
    test = write_rows(tmp_path / "test.jsonl", 8)
    cfg = {
        "method": "classify",
        "model": {"name_or_path": str(model), "dtype": "float32"},
        "data": {"train": str(train), "validation": str(test), "max_length": 32},
        "classify": {"mode": mode, "text_field": "body", "label_field": "topic", "top_k_layers": 1},
        "train": {
            "output_dir": str(tmp_path / "runs"),
            "run_name": mode,
            "max_steps": 3,
            "micro_batch_size": 4,
            "precision": "fp32",
            "seed": 1,
        },
        "optim": {"lr": 1e-2},
        "lora": {"r": 4, "dropout": 0.0},
    }
    for key, value in extra.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    path = tmp_path / f"{mode}.yaml"
    path.write_text(json.dumps(cfg))
    return path


def config(tmp_path: Path, model: Path, mode: str, **extra: Any) -> Any:
    return load_config(config_file(tmp_path, model, mode, **extra))


def changed(base_dir: Path, final_dir: Path) -> set[str]:
    """Names of the backbone tensors that differ between the base checkpoint and final/."""
    base = load_file(str(base_dir / "model.safetensors"))
    final = load_file(str(final_dir / "model.safetensors"))
    out = set()
    for name, value in final.items():
        key = name if name in base else name.split(".", 1)[1]  # BertModel saves no "bert."
        if key in base and not torch.equal(base[key], value):
            out.add(key)
    return out


def test_head_mode_trains_only_the_head(tmp_path: Path, tiny_bert: Path) -> None:
    result = run(config(tmp_path, tiny_bert, "head"))
    assert changed(tiny_bert, result.final_dir) == set()  # backbone frozen (pooler included)
    saved = json.loads((result.final_dir / "config.json").read_text())
    assert saved["id2label"] == {"0": "billing", "1": "shipping"}
    report = json.loads((result.run_dir / "eval.json").read_text())
    assert report["held_out"]["examples"] == 8
    assert report["majority_baseline"]["accuracy"] == 0.5
    assert len(report["held_out"]["confusion_matrix"]) == 2
    lines = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["split"] for x in lines] == ["train"] * 3 + ["val"]
    model, tok = load_classifier(result.run_dir, device="cpu")
    items = read_labelled(tmp_path / "test.jsonl", "body", "topic")
    enc = encode(tok, items, {"billing": 0, "shipping": 1}, 32)
    acc = sum(
        p == y
        for p, (_, y) in zip(predict(ClassifierStep(model), enc, 0, 8, "fp32"), enc, strict=True)
    )
    assert acc / 8 == report["held_out"]["accuracy"]


def test_top_k_mode_trains_the_top_layer_only(tmp_path: Path, tiny_bert: Path) -> None:
    result = run(config(tmp_path, tiny_bert, "top_k"))
    touched = changed(tiny_bert, result.final_dir)
    assert touched and all(n.startswith("encoder.layer.1.") for n in touched)


def test_full_mode_trains_the_embeddings_too(tmp_path: Path, tiny_bert: Path) -> None:
    result = run(config(tmp_path, tiny_bert, "full"))
    touched = changed(tiny_bert, result.final_dir)
    assert any(n.startswith("embeddings.") for n in touched)
    assert any(n.startswith("encoder.layer.0.") for n in touched)


def test_lora_mode_saves_adapter_and_head_and_reloads(tmp_path: Path, tiny_bert: Path) -> None:
    cfg = config(tmp_path, tiny_bert, "lora", lora={"target_modules": "all-linear"})
    result = run(cfg)
    adapter = json.loads((result.final_dir / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS" and "classifier" in adapter["modules_to_save"]
    weights = load_file(str(result.final_dir / "adapter_model.safetensors"))
    assert any("lora_A" in k for k in weights) and any("classifier" in k for k in weights)
    model, tok = load_classifier(result.final_dir, device="cpu")
    items = read_labelled(tmp_path / "test.jsonl", "body", "topic")
    enc = encode(tok, items, {"billing": 0, "shipping": 1}, 32)
    preds = predict(ClassifierStep(model), enc, 0, 8, "fp32")
    report = json.loads((result.run_dir / "eval.json").read_text())
    acc = sum(p == y for p, (_, y) in zip(preds, enc, strict=True)) / 8
    assert acc == report["held_out"]["accuracy"]


@pytest.mark.parametrize("mode", ["head", "lora"])
def test_decoder_backbone(tmp_path: Path, tiny_llama: Path, mode: str) -> None:
    result = run(config(tmp_path, tiny_llama, mode))
    report = json.loads((result.run_dir / "eval.json").read_text())
    assert report["held_out"]["examples"] == 8
    model, tok = load_classifier(result.final_dir, device="cpu")
    assert model.config.pad_token_id == tok.pad_token_id  # set for the decoder's pooling


def test_decoder_top_k_trains_top_layer_and_final_norm(tmp_path: Path, tiny_llama: Path) -> None:
    result = run(config(tmp_path, tiny_llama, "top_k"))
    touched = changed(tiny_llama, result.final_dir)
    assert "model.norm.weight" in touched
    assert any(n.startswith("model.layers.1.") for n in touched)
    assert not any(n.startswith(("model.layers.0.", "model.embed_tokens")) for n in touched)


def test_decoder_pooling_uses_the_last_real_token(tiny_llama: Path, tmp_path: Path) -> None:
    """transformers pools at the rightmost non-pad token: with right padding that is the last
    token the attention mask keeps, so padding a batch does not change an example's logits."""
    cfg = config(tmp_path, tiny_llama, "head")
    from tunesmith.methods.classify import build_model
    from tunesmith.models.load import load_tokenizer

    tok = load_tokenizer(tiny_llama)
    model = build_model(cfg, tiny_llama, ["a", "b"], tok).eval()
    short, long = (
        tok("refund please")["input_ids"],
        tok("my parcel is very late again")["input_ids"],
    )
    batch = collate([(short, 0), (long, 1)], tok.pad_token_id)
    with torch.no_grad():
        padded = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        alone = model(input_ids=torch.tensor([short])).logits
    assert torch.allclose(padded[0], alone[0], atol=1e-5)


def test_text_holding_the_pad_token_is_refused(tmp_path: Path, tiny_llama: Path) -> None:
    cfg = config(tmp_path, tiny_llama, "head")
    with (tmp_path / "train.jsonl").open("a") as fh:
        fh.write(json.dumps({"body": "done <|im_end|>", "topic": "billing"}) + "\n")
    with pytest.raises(DataError, match=r"train.jsonl:25.*padding token '<\|im_end\|>'"):
        run(cfg)


def test_unseen_held_out_label_fails_before_training(tmp_path: Path, tiny_bert: Path) -> None:
    cfg = config(tmp_path, tiny_bert, "head")
    write_rows(tmp_path / "test.jsonl", 3, ("billing", "shipping", "returns"))
    with pytest.raises(
        LabelError, match=r"test.jsonl:3: label 'returns'.*\['billing', 'shipping'\]"
    ):
        run(cfg)
    assert not (tmp_path / "runs").exists()


def test_missing_label_field_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n')
    with pytest.raises(DataError, match=r"d.jsonl:2: field 'label': missing"):
        read_labelled(path, "text", "label")


@pytest.mark.parametrize(
    ("section", "key"), [("data", "packing"), ("data", "template"), ("train", "compile")]
)
def test_validate_refuses_a_field_classify_does_not_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str, key: str
) -> None:
    path = config_file(tmp_path, tmp_path / "unused-model", "head", **{section: {key: False}})
    assert main(["validate", str(path)]) == 2
    assert f"unknown key '{section}.{key}' for method classify" in capsys.readouterr().err


def test_held_out_split_of_train_follows_the_one_rule_and_its_cap(tmp_path: Path) -> None:
    train = write_rows(tmp_path / "train.jsonl", 24)
    data = ClassifyDataSection(train=[str(train)], val_fraction=0.25, seed=3)
    whole = prepare_classify_data(data, "body", "topic")
    assert (len(whole.train), len(whole.held_out)) == (18, 6)
    assert not {x.line for x in whole.train} & {x.line for x in whole.held_out}
    capped = prepare_classify_data(data.model_copy(update={"max_val_examples": 4}), "body", "topic")
    assert len(capped.held_out) == 4 and set(capped.held_out) <= set(whole.held_out)
    assert capped.train == whole.train  # the cap drops held-out rows, it trains on none of them
    both = ClassifyDataSection(train=[str(train)], validation=str(train), max_val_examples=5)
    assert len(prepare_classify_data(both, "body", "topic").held_out) == 5


def test_no_held_out_rows_is_said_and_nothing_is_evaluated(
    tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, tiny_bert, "head", data={"validation": None, "val_fraction": 0.0})
    result = run(cfg)
    assert "no held-out labelled examples" in capsys.readouterr().out
    assert result.eval == {} and not (result.run_dir / "eval.json").exists()
    lines = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["split"] for x in lines] == ["train"] * 3
    assert (result.final_dir / "labels.json").is_file()


def test_best_weights_and_early_stopping_follow_held_out_macro_f1(
    tmp_path: Path, tiny_bert: Path
) -> None:
    """An lr too small to change a prediction: the first evaluation stays the best, and two more
    without a higher macro-F1 stop the run (patience 2) after step 3 of 10."""
    cfg = config(
        tmp_path,
        tiny_bert,
        "head",
        train={"max_steps": 10, "eval_every": 1, "early_stopping_patience": 2},
        optim={"lr": 1e-12},
    )
    result = run(cfg)
    assert result.stopped_early and result.steps == 3
    lines = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    f1 = [x["macro_f1"] for x in lines if x["split"] == "val"]
    assert len(f1) == 3 and result.best_macro_f1 == f1[0]
    best = result.run_dir / "best"
    assert json.loads((best / "labels.json").read_text()) == {"labels": ["billing", "shipping"]}
    assert (best / "tunesmith_config.yaml").is_file()
    model, _ = load_classifier(best, device="cpu")
    assert model.config.id2label == {0: "billing", 1: "shipping"}
