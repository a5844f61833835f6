"""The Python API called directly: load_config, train -> Run, Run.open, generate, evaluate,
merge, export, plan, prep; ``import tunesmith`` stays light."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import tunesmith
from tests.helpers.runs import REPO, write_chat_data, write_config
from tunesmith.config import ConfigError
from tunesmith.errors import UserError


@pytest.fixture(scope="module")
def api_run(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> tunesmith.Run:
    tmp = tmp_path_factory.mktemp("api")
    cfg = write_config(tmp, tiny_llama, write_chat_data(tmp / "d.jsonl", n=48),
                       train={"max_steps": 12, "eval_every": 6}, optim={"lr": 1e-2})  # fmt: skip
    return tunesmith.train(cfg, ["train.run_name=api"])


def test_import_is_light_and_exports_the_api() -> None:
    code = (
        "import json, sys, tunesmith\n"
        "names = [n for n in tunesmith.__all__ if getattr(tunesmith, n) is None]\n"
        "print(json.dumps([names, sorted(m for m in ('torch', 'transformers', 'peft') "
        "if m in sys.modules)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=120, check=True).stdout  # fmt: skip
    assert json.loads(out.splitlines()[-1]) == [[], []]
    assert tunesmith.train is tunesmith.api.train and tunesmith.Run is tunesmith.api.Run
    with pytest.raises(AttributeError):
        tunesmith.no_such_function  # noqa: B018


def test_load_config_from_a_path_a_dict_or_a_config(tmp_path: Path, tiny_llama: Path) -> None:
    path = write_config(tmp_path, tiny_llama, tmp_path / "d.jsonl")
    from_path = tunesmith.load_config(path, ["lora.r=4"])
    from_dict = tunesmith.load_config(yaml.safe_load(path.read_text()), ["lora.r=4"])
    assert from_path == from_dict and from_path.lora.r == 4
    again = tunesmith.load_config(from_path, ["optim.lr=0.1"])
    assert again.optim.lr == 0.1 and again.lora.r == 4 and from_path.optim.lr != 0.1
    assert tunesmith.load_config(from_path) is from_path
    with pytest.raises(ConfigError, match=r"cfg.yaml:\d+: unknown key 'lora.rank'"):
        tunesmith.load_config(path.write_text(path.read_text().replace("dropout", "rank")) and path)


def test_train_returns_a_run_that_open_reads_back(api_run: tunesmith.Run) -> None:
    run = api_run
    assert run.method == "sft" and run.steps == 12 and run.final == run.path / "final"
    assert run.train_loss is not None and run.val_loss is not None
    opened = tunesmith.Run.open(run.path)
    assert (opened.path, opened.method, opened.steps, opened.final) == (
        run.path, "sft", 12, run.final)  # fmt: skip
    assert opened.train_loss == pytest.approx(run.train_loss)
    assert opened.val_loss == pytest.approx(run.val_loss)
    text = repr(opened)
    assert text.startswith("Run(path=") and "summary" not in text and "_loaded" not in text
    with pytest.raises(UserError, match="not a run directory"):
        tunesmith.Run.open(run.path / "final")


def test_generate_and_evaluate_on_the_run(api_run: tunesmith.Run) -> None:
    replies = api_run.generate(["3 plus 4?", "1 plus 1?"], max_new_tokens=4)
    assert [g.prompt for g in replies] == ["3 plus 4?", "1 plus 1?"]
    assert all(isinstance(g.reply, str) for g in replies)
    assert api_run.generate("3 plus 4?", max_new_tokens=4)[0] == replies[0]  # greedy, cached
    tuned = api_run.evaluate()
    base = tunesmith.evaluate(api_run.path, use_adapter=False)
    assert tuned.suite is None and tuned.metrics["examples"] == base.metrics["examples"] > 0
    assert tuned.metrics["loss"] < base.metrics["loss"]  # it learned the held-out task
    assert tuned.metrics["perplexity"] == pytest.approx(2.718281828 ** tuned.metrics["loss"],
                                                        rel=1e-4)  # fmt: skip
    with pytest.raises(UserError, match="do not apply"):
        api_run.evaluate("suite.yaml", max_length=32)


def test_merge_and_export_are_verified(api_run: tunesmith.Run, tmp_path: Path) -> None:
    merged = api_run.merge(out=tmp_path / "merged", device="cpu")
    assert merged.output == tmp_path / "merged" and (merged.output / "config.json").is_file()
    assert merged.report["max_abs_logit_diff"] <= 1e-3
    exported = api_run.export("safetensors", tmp_path / "export", device="cpu")
    assert (exported.output / "model.safetensors").is_file()
    assert exported.kind == "export-safetensors"
    with pytest.raises(Exception, match="unknown export format"):
        api_run.export("onnx")


def test_plan_estimates_and_advises() -> None:
    result = tunesmith.plan("7B", setup=tunesmith.PlanSetup(method="qlora", device_gib=24))
    assert result.estimate is not None and result.estimate["setup"]["method"] == "qlora"
    assert result.estimate["total"] > 0 and "best" in result.as_dict()
    advice = tunesmith.plan(advise=True, facts=tunesmith.AdviceFacts(examples=30))
    assert advice.estimate is None and advice.advice is not None
    assert set(advice.as_dict()) == {"advice"}
    with pytest.raises(UserError):
        tunesmith.plan()


def test_prep_from_a_dict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the recipe's input paths are relative to the checkout
    recipe = yaml.safe_load((REPO / "configs/prep/example.yaml").read_text())
    result = tunesmith.prep({**recipe, "output_dir": str(tmp_path / "out"), "progress": False})
    assert result.output_dir == tmp_path / "out"
    assert (result.output_dir / "train.jsonl").is_file() and result.splits
    kept = sum(1 for _ in (result.output_dir / "train.jsonl").open())
    assert result.splits["train"] == kept or result.splits.get("train", {}) != {}
