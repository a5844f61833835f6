"""``tunesmith report`` per method: one tiny real run of each of DPO, reward model, GRPO, PPO and
classify, each page plotting what that method logs at evaluation, with its best values."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.preference_data import write_pairs
from tests.helpers.runs import write_config
from tests.methods.test_classify import config_file as classify_config
from tests.methods.test_classify import make_tiny_bert
from tests.methods.test_dpo import write_dpo_config, write_pref_data
from tests.methods.test_grpo import _config as grpo_config
from tests.methods.test_ppo import ppo_config
from tests.report.test_report import PROBE
from tunesmith.cli import main

# method -> {chart id: series that must be plotted}
EXPECTED = {
    "dpo": {
        "dpo-accuracy": ["accuracy"],
        "dpo-margin": ["margin"],
        "dpo-logps": ["logps/chosen", "logps/rejected"],
        "dpo-logps-change": ["logps/chosen_change", "logps/rejected_change"],
    },
    "reward": {"reward-accuracy": ["val_accuracy"], "reward-margin": ["val_reward_margin"]},
    "grpo": {
        "grpo-accuracy": ["accuracy"],
        "grpo-rewards": ["reward/math_mean", "reward/length_mean"],
        "grpo-zero-variance": ["zero_variance_groups"],
        "grpo-kl": ["kl"],
    },
    "ppo": {
        "ppo-reward": ["reward_mean", "reward_mean (train)"],
        "ppo-kl": ["kl"],
        "ppo-beta": ["kl_coef"],
        "ppo-length": ["completion_length", "response_length (train)"],
    },
    "classify": {"classify-scores": ["accuracy", "macro_f1", "majority_accuracy"]},
}
BEST_LABELS = {
    "dpo": "best reward accuracy",
    "reward": "best pairwise accuracy",
    "grpo": "best held-out accuracy",
    "ppo": "best held-out reward",
    "classify": "best macro-F1",
}


def _train(cfg: Path, *overrides: str) -> None:
    assert main(["train", str(cfg), *overrides]) == 0


@pytest.fixture(scope="module")
def method_runs(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> dict[str, Path]:
    """One 2-step run per method, evaluated after every step (5 tiny runs)."""
    root = tmp_path_factory.mktemp("method_runs")
    runs: dict[str, Path] = {}
    tmp = root / "dpo"
    tmp.mkdir()
    data = write_pref_data(tmp / "pref.jsonl", n=16)
    _train(write_dpo_config(tmp, tiny_llama, data, train={"max_steps": 2, "eval_every": 1}))
    runs["dpo"] = tmp / "runs" / "run"

    tmp = root / "reward"
    tmp.mkdir()
    pairs = write_pairs(tmp / "pairs.jsonl", 16, 0)
    cfg = write_config(
        tmp,
        tiny_llama,
        pairs,
        data={"validation": str(write_pairs(tmp / "val.jsonl", 8, 1)), "max_length": 64},
        train={"max_steps": 2, "micro_batch_size": 8, "eval_every": 1},
    )
    cfg.write_text(cfg.read_text() + "method: reward\n")
    _train(cfg)
    runs["reward"] = tmp / "runs" / "run"

    tmp = root / "grpo"
    tmp.mkdir()
    _train(grpo_config(tmp, tiny_llama), "train.max_steps=2", "train.eval_every=1")
    runs["grpo"] = tmp / "runs" / "run"

    tmp = root / "ppo"
    tmp.mkdir()
    cfg = ppo_config(
        tmp,
        tiny_llama,
        pairs,
        runs["reward"],
        data={"validation": str(tmp.parent / "reward" / "val.jsonl")},
        train={"max_steps": 2, "eval_every": 1},
    )
    _train(cfg)
    runs["ppo"] = tmp / "runs" / "run"

    tmp = root / "classify"
    tmp.mkdir()
    bert = make_tiny_bert(tmp / "bert")
    _train(classify_config(tmp, bert, "head", train={"max_steps": 2, "eval_every": 1}))
    runs["classify"] = tmp / "runs" / "head"
    return runs


def _chart(page: str, chart_id: str) -> str:
    found = re.search(rf'<svg class="chart [^"]*" data-chart="{chart_id}".*?</svg>', page, re.S)
    assert found, chart_id
    return found.group(0)


def _points(svg: str, series: str) -> int:
    found = re.search(rf'data-series="{re.escape(html.escape(series))}" data-points="(\d+)"', svg)
    if found is None:  # a single point is drawn as a circle
        found = re.search(rf'data-series="{re.escape(html.escape(series))}"', svg)
        return 1 if found else 0
    return int(found.group(1))


@pytest.mark.parametrize("method", list(EXPECTED))
def test_each_method_report_plots_its_eval_curves(
    method_runs: dict[str, Path], method: str, tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    assert main(["report", str(method_runs[method]), "--out", str(out)]) == 0
    page = out.read_text()
    assert "<h2>Evaluation curves</h2>" in page
    for chart_id, series in EXPECTED[method].items():
        svg = _chart(page, chart_id)
        for name in series:
            assert _points(svg, name) >= 2, (chart_id, name)  # two evaluations or more
    best = re.search(rf"<tr><td>{BEST_LABELS[method]}</td><td>([^<]*)</td>", page)
    assert best and best.group(1) not in ("", "-")
    assert "best val loss" not in page or method == "reward"


def test_comparison_gives_each_method_its_best_column(
    method_runs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "cmp.html"
    assert main(["report", *(str(p) for p in method_runs.values()), "--out", str(out)]) == 0
    page = out.read_text()
    assert "reward accuracy" in page and "macro-F1" in page and "held-out reward" in page


def test_method_reports_render_in_headless_chromium(
    method_runs: dict[str, Path], tmp_path: Path
) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (shutil.which('chromium') is None)")
    for method, run in method_runs.items():
        out = tmp_path / f"{method}.html"
        assert main(["report", str(run), "--out", str(out)]) == 0
        out.write_text(out.read_text().replace("<head>", "<head>\n" + PROBE, 1))
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000",
               "--dump-dom", out.as_uri()]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
        assert found, done.stdout[-2000:]
        probe = json.loads(html.unescape(found.group(1)))
        assert probe["errors"] == [], method
        charts = {c["id"]: c for c in probe["charts"]}
        assert set(EXPECTED[method]) <= set(charts), method
        for chart_id in EXPECTED[method]:
            c = charts[chart_id]
            assert c["w"] > 50 and c["h"] > 20 and all(x > 1 for x in c["lines"]), (method, c)
