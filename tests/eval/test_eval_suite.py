"""Evaluation suites: loading and errors, and each task type on tiny models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from tests.eval.conftest import write_suite
from tunesmith.cli import main
from tunesmith.config import ConfigError
from tunesmith.data.records import DataError
from tunesmith.data.templates import encode_example, encode_prompt
from tunesmith.eval.items import load_items
from tunesmith.eval.perplexity import evaluate_loss
from tunesmith.eval.runner import run_suite
from tunesmith.eval.scorers import token_f1
from tunesmith.eval.suite import SuiteError, load_suite
from tunesmith.generation import SamplingParams, chat_replies
from tunesmith.models.load import load_for_inference

REPO = Path(__file__).resolve().parents[2]


def test_shipped_suites_load() -> None:
    files = sorted((REPO / "suites").glob("*.yaml"))
    assert len(files) >= 3
    for f in files:
        suite = load_suite(f)
        for task in suite.config.tasks:
            assert load_items(task, suite.data_paths[task.name]), (f, task.name)


def test_suite_errors_name_file_line_and_field(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text('{"question": "q", "choices": ["x", "y"], "answer": 1}\n')
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: s\ntasks:\n  - name: t\n    data: d.jsonl\n    metrix: [f1]\n")
    with pytest.raises(
        ConfigError,
        match=r"bad.yaml:5: unknown key 'tasks.0.metrix'; did you mean 'tasks.0.metrics'",
    ):
        load_suite(bad)
    wrong = write_suite(tmp_path / "w.yaml", [{"name": "t", "data": "d.jsonl", "type": "choice",
                                              "metrics": ["rouge_l"]}])  # fmt: skip
    with pytest.raises(ConfigError, match="metric 'rouge_l' does not apply to choice"):
        load_suite(wrong)
    missing = write_suite(tmp_path / "m.yaml", [{"name": "t", "data": "nope.jsonl"}])
    with pytest.raises(SuiteError, match=r"task 't': 'nope\.jsonl' not found"):
        load_suite(missing)


def test_bad_rows_name_the_line_and_field(tmp_path: Path) -> None:
    data = tmp_path / "c.jsonl"
    data.write_text(
        '{"question": "q1", "choices": ["a", "b"], "answer": 0}\n'
        '{"question": "q2", "choices": ["a", "b"], "answer": 5}\n'
    )
    suite = load_suite(write_suite(tmp_path / "s.yaml", [
        {"name": "mc", "type": "choice", "data": "c.jsonl", "prompt": "{question}"},
        {"name": "gen", "data": "c.jsonl", "prompt": "{query}", "reference": "answer"},
    ]))  # fmt: skip
    mc, gen = suite.config.tasks
    with pytest.raises(DataError, match=r"c.jsonl:2: field 'answer': 5 is neither"):
        load_items(mc, suite.data_paths["mc"])
    with pytest.raises(DataError, match=r"c.jsonl:1: field 'query': missing"):
        load_items(gen, suite.data_paths["gen"])


@torch.no_grad()
def _choice_logprob(model, tok, prompt: list[int], choice: str) -> float:
    """Unbatched reference: sum of log p(choice token | prefix) from one plain forward."""
    ids = tok(choice, add_special_tokens=False)["input_ids"]
    full = torch.tensor([prompt + ids])
    logp = torch.log_softmax(model(full).logits[0, :-1].float(), dim=-1)
    return sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(ids))


def test_choice_and_loss_tasks_match_unbatched_reference(tmp_path: Path, tiny_llama: Path) -> None:
    model, tok = load_for_inference(str(tiny_llama), device="cpu")
    suite = load_suite(write_suite(tmp_path / "s.yaml", [
        {"name": "mc", "type": "choice", "data": str(REPO / "data/eval/choice.jsonl"),
         "prompt": "{question}", "metrics": ["accuracy", "classification"]},
        {"name": "lm", "type": "loss", "data": str(REPO / "data/demo/test.jsonl"), "limit": 10},
    ], batch_size=3))  # fmt: skip
    out = run_suite(model, tok, suite, progress=False)
    mc = out["tasks"]["mc"]
    assert mc["n"] == 12
    items = load_items(suite.config.tasks[0], suite.data_paths["mc"])
    for ex, item in zip(mc["examples"], items, strict=True):
        prompt = encode_prompt(list(item.prompt), tok)
        want = [_choice_logprob(model, tok, prompt, c) for c in item.choices]
        assert ex["logprobs"] == pytest.approx(want, abs=1e-4)
        assert ex["predicted_index"] == max(range(len(want)), key=want.__getitem__)
        assert ex["scores"]["accuracy"] == float(ex["predicted_index"] == item.answer)
    acc = sum(e["scores"]["accuracy"] for e in mc["examples"]) / 12
    assert mc["metrics"]["accuracy"] == pytest.approx(acc)
    assert mc["metrics"]["classification"]["accuracy"] == pytest.approx(acc)

    lm_items = load_items(suite.config.tasks[1], suite.data_paths["lm"])
    encoded = [encode_example(i.example, tok, max_length=1024) for i in lm_items]
    ref = evaluate_loss(model, encoded, tok.pad_token_id, torch.device("cpu"), batch_size=1)
    assert out["tasks"]["lm"]["metrics"]["loss"] == pytest.approx(ref["loss"], rel=1e-5)
    assert out["tasks"]["lm"]["metrics"]["tokens"] == ref["tokens"]


def test_generation_task_scores_batched_replies(trained_run: Path, gen_suite: Path) -> None:
    model, tok = load_for_inference(str(trained_run), device="cpu")
    suite = load_suite(gen_suite)
    out = run_suite(model, tok, suite, progress=False)
    task = out["tasks"]["sums"]
    items = load_items(suite.config.tasks[0], suite.data_paths["sums"])
    params = SamplingParams(max_new_tokens=8)
    for ex, item in zip(task["examples"], items, strict=True):
        # batched with left padding (batch_size 5) == one prompt at a time
        alone = chat_replies(model, tok, [list(item.prompt)], params)[0]
        assert ex["prediction"] == alone
        assert ex["reference"] == item.reference and item.reference.startswith("It is")
        assert ex["scores"]["f1"] == pytest.approx(token_f1(alone, item.reference))
    f1s = [e["scores"]["f1"] for e in task["examples"]]
    assert task["metrics"]["f1"] == pytest.approx(sum(f1s) / len(f1s)) and task["metrics"]["f1"] > 0


def test_eval_cli_writes_results_into_the_run(
    trained_run: Path, gen_suite: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", str(trained_run), "--suite", str(gen_suite)]) == 0
    saved = json.loads((trained_run / "eval-sums.json").read_text())
    printed = json.loads(capsys.readouterr().out)
    assert printed["summary"] == saved["summary"] and "tasks" not in printed
    assert len(saved["tasks"]["sums"]["examples"]) == 8
    assert main(["eval", str(trained_run), "--suite", str(gen_suite), "--no-adapter",
                 "--output", str(gen_suite.parent / "base.json")]) == 0  # fmt: skip
    base = json.loads((gen_suite.parent / "base.json").read_text())
    assert base["summary"]["sums/f1"] < saved["summary"]["sums/f1"]  # training taught the format
    capsys.readouterr()
    assert main(["eval", str(trained_run), "--suite", str(gen_suite), "--data", "x.jsonl"]) == 2
    assert "eval --suite: --data do not apply" in capsys.readouterr().err


def test_missing_base_model_is_a_clear_error(
    tmp_path: Path, trained_run: Path, gen_suite: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "moved-run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("checkpoints", "best"))
    gone = str(tmp_path / "deleted-base-model")
    cfg_file = run / "final" / "tunesmith_config.yaml"
    cfg = yaml.safe_load(cfg_file.read_text())
    cfg["model"]["name_or_path"] = gone
    cfg_file.write_text(yaml.safe_dump(cfg))
    adapter = json.loads((run / "final" / "adapter_config.json").read_text())
    adapter["base_model_name_or_path"] = gone
    (run / "final" / "adapter_config.json").write_text(json.dumps(adapter))
    for argv in (["--suite", str(gen_suite)], ["--data", str(REPO / "data/demo/test.jsonl")]):
        assert main(["eval", str(run), *argv]) == 2
        err = capsys.readouterr().err
        assert str(run) in err and gone in err and "missing" in err and "Traceback" not in err


def test_preference_by_log_likelihood(tmp_path: Path, tiny_llama: Path) -> None:
    model, tok = load_for_inference(str(tiny_llama), device="cpu")
    suite = load_suite(REPO / "suites" / "preference.yaml")
    out = run_suite(model, tok, suite, progress=False)["tasks"]["helpfulness"]
    items = load_items(suite.config.tasks[0], suite.data_paths["helpfulness"])
    for ex, item in zip(out["examples"], items, strict=True):
        prompt = encode_prompt(list(item.prompt), tok)
        chosen, rejected = (_choice_logprob(model, tok, prompt, c) for c in item.choices)
        assert ex["chosen_score"] == pytest.approx(chosen, abs=1e-4)
        assert ex["scores"]["preference_accuracy"] == float(chosen > rejected)
    wins = sum(e["chosen_score"] > e["rejected_score"] for e in out["examples"])
    assert out["metrics"]["preference_accuracy"] == pytest.approx(wins / len(items))
    assert out["metrics"]["scorer"] == "log_likelihood"


def test_preference_with_a_reward_model(tmp_path: Path, tiny_llama: Path) -> None:
    from tests.helpers.preference_data import write_pairs
    from tests.helpers.runs import write_config
    from tunesmith.models.reward_head import load_reward_model

    cfg = write_config(
        tmp_path,
        tiny_llama,
        write_pairs(tmp_path / "train.jsonl", 48, 0),
        data={"max_length": 64, "val_fraction": 0.0},
        train={"max_steps": 20, "micro_batch_size": 16, "run_name": "rm"},
        optim={"lr": 5e-3},
    )
    cfg.write_text(cfg.read_text().replace("\n", "\nmethod: reward\n", 1))
    assert main(["train", str(cfg)]) == 0
    write_pairs(tmp_path / "held.jsonl", 12, 1)
    task = {"name": "p", "type": "preference", "data": "held.jsonl", "reward_model": "runs/rm"}
    suite = load_suite(write_suite(tmp_path / "p.yaml", [task]))
    model, tok = load_for_inference(str(tiny_llama), device="cpu")
    out = run_suite(model, tok, suite, progress=False)["tasks"]["p"]
    rows = [json.loads(x) for x in (tmp_path / "held.jsonl").read_text().splitlines()]
    rm = load_reward_model(tmp_path / "runs" / "rm", device="cpu")
    chosen = rm.score([r["prompt"] for r in rows], [r["chosen"] for r in rows])
    rejected = rm.score([r["prompt"] for r in rows], [r["rejected"] for r in rows])
    want = sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(rows)
    assert out["metrics"]["scorer"] == "reward_model"
    assert out["metrics"]["preference_accuracy"] == pytest.approx(want)
    assert out["metrics"]["preference_accuracy"] >= 0.9  # the reward model learned the split


def test_fixed_label_choice_task_gives_classification_metrics(tiny_llama: Path) -> None:
    model, tok = load_for_inference(str(tiny_llama), device="cpu")
    suite = load_suite(REPO / "suites" / "sentiment.yaml")
    task = run_suite(model, tok, suite, progress=False)["tasks"]["sentiment"]
    cls = task["metrics"]["classification"]
    examples = task["examples"]
    assert set(cls["labels"]) <= {"negative", "positive"} and len(examples) == 10
    for i, ref in enumerate(cls["labels"]):
        for j, pred in enumerate(cls["labels"]):
            want = sum(e["reference"] == ref and e["prediction"] == pred for e in examples)
            assert cls["confusion_matrix"][i][j] == want
    assert cls["accuracy"] == pytest.approx(task["metrics"]["accuracy"])


def test_overrides_index_into_the_task_list() -> None:
    suite_path = Path(__file__).resolve().parents[2] / "suites" / "demo.yaml"
    suite = load_suite(suite_path, ["tasks.0.limit=5", "tasks.1.limit=3"])
    assert [t.limit for t in suite.config.tasks] == [5, 3]
    assert suite.config.tasks[0].name == "extract_json"  # the rest of the task is kept
    with pytest.raises(ConfigError, match=r"tasks is a list of 2 item\(s\); '7' is not an index"):
        load_suite(suite_path, ["tasks.7.limit=5"])
