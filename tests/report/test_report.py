"""``tunesmith report``: a real tiny run rendered as a static page, checked in headless Chromium."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers.runs import train, write_chat_data, write_config
from tunesmith.cli import main

REPO = Path(__file__).resolve().parents[2]

PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.type)), true);
window.addEventListener('load', () => {
  const charts = [...document.querySelectorAll('svg.chart')].map(svg => {
    const box = svg.getBBox();
    const lines = [...svg.querySelectorAll('polyline.series')].map(p => p.getTotalLength());
    return {id: svg.dataset.chart, w: box.width, h: box.height, lines: lines};
  });
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({errors: window.__errors, charts: charts});
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def report_run(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    """A real 8-step run with an eval suite result, forgetting results and forgetting rows."""
    tmp = tmp_path_factory.mktemp("report_run")
    cfg = write_config(
        tmp, tiny_llama, write_chat_data(tmp / "d.jsonl"), train={"max_steps": 8, "eval_every": 4}
    )
    run = train(cfg)
    suite = tmp / "mc.yaml"
    suite.write_text(yaml.safe_dump({"name": "mc", "tasks": [{
        "name": "mc", "type": "choice", "data": str(REPO / "data/eval/choice.jsonl"),
        "prompt": "{question}", "limit": 4}]}))  # fmt: skip
    assert main(["eval", str(run), "--suite", str(suite)]) == 0
    return run


def _add_forgetting(run: Path) -> None:
    forgetting = {
        "before": {"probe_loss": 3.1, "mc_accuracy": 0.5},
        "after": {"probe_loss": 3.4, "mc_accuracy": 0.25},
        "delta": {"probe_loss": 0.3, "mc_accuracy": -0.25},
        "flipped": [{"id": "mc:3", "before": "Mercury", "after": "Venus"}],
        "target_gain": 0.4,
    }
    (run / "forgetting.json").write_text(json.dumps(forgetting))
    with (run / "metrics.jsonl").open("a") as fh:
        for step, loss in ((4, 3.2), (8, 3.4)):
            fh.write(json.dumps({"step": step, "split": "forgetting", "probe_loss": loss}) + "\n")


def _chart(page: str, chart_id: str) -> str:
    found = re.search(rf'<svg class="chart [^"]*" data-chart="{chart_id}".*?</svg>', page, re.S)
    assert found, chart_id
    return found.group(0)


def _points(svg: str, series: str) -> int:
    found = re.search(rf'class="series" data-series="{series}" data-points="(\d+)"', svg)
    assert found, series
    return int(found.group(1))


def test_run_report_plots_the_logged_metrics(report_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(report_run, run, ignore=shutil.ignore_patterns("checkpoints", "best", "final"))
    plain = main(["report", str(run), "--out", str(tmp_path / "plain.html")])
    assert plain == 0 and "<h2>Forgetting</h2>" not in (tmp_path / "plain.html").read_text()

    _add_forgetting(run)
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    n_train = sum(r["split"] == "train" for r in rows)
    n_val = sum(r["split"] == "val" for r in rows)
    assert (n_train, n_val) == (8, 2)
    loss = _chart(page, "loss")
    assert _points(loss, "train") == n_train and _points(loss, "val") == n_val
    assert _points(_chart(page, "lr"), "lr") == n_train
    assert _points(_chart(page, "tokens_per_s"), "tokens/s") == n_train
    assert "eval-mc.json" in page and "mc/accuracy" in page
    assert "<h2>Forgetting</h2>" in page and "target gain: 0.4" in page
    assert _points(_chart(page, "forgetting-probe_loss"), "probe_loss") == 2
    assert 'data-label="mc_accuracy" data-value="0.25"' in page and "Venus" in page
    # self-contained: no scripts, no external resources
    assert "<script" not in page and not re.search(r'(src|href)="', page)


def test_comparison_report_overlays_runs(report_run: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(report_run, other, ignore=shutil.ignore_patterns("checkpoints", "best"))
    out = tmp_path / "cmp.html"
    assert main(["report", str(report_run), str(other), "--out", str(out)]) == 0
    page = out.read_text()
    loss = _chart(page, "loss")
    assert _points(loss, report_run.name) == 8 and _points(loss, "other") == 8
    assert page.count("eval-mc.json: mc/accuracy") == 1

    # two runs of the same name stay apart; one without evals shows none
    twin = tmp_path / "elsewhere" / report_run.name
    shutil.copytree(report_run, twin, ignore=shutil.ignore_patterns("checkpoints", "best", "eval*"))
    assert main(["report", str(report_run), str(twin), "--out", str(out)]) == 0
    page = out.read_text()
    mine, theirs = f"{report_run.parent.name}/{report_run.name}", f"elsewhere/{report_run.name}"
    assert _points(_chart(page, "loss"), mine) == _points(_chart(page, "loss"), theirs) == 8
    row = re.search(r"<tr><td>eval-mc.json: mc/accuracy</td><td>([^<]*)</td><td>([^<]*)</td>", page)
    assert row and row.group(1) != "-" and row.group(2) == "-"


def test_report_of_a_non_run_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert f"{tmp_path}: not a run directory (no metrics.jsonl)" in capsys.readouterr().err


def test_report_renders_in_headless_chromium(report_run: Path, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (shutil.which('chromium') is None)")
    run = tmp_path / "run"
    shutil.copytree(report_run, run, ignore=shutil.ignore_patterns("checkpoints", "best", "final"))
    _add_forgetting(run)
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("<head>", "<head>\n" + PROBE, 1))
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
           "--v=0", "--virtual-time-budget=3000", "--dump-dom", probed.as_uri()]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, done.stdout[-2000:]
    probe = json.loads(html.unescape(found.group(1)))
    assert probe["errors"] == []
    assert "Uncaught" not in done.stderr and "ERR_FILE_NOT_FOUND" not in done.stderr
    charts = {c["id"]: c for c in probe["charts"]}
    assert {"loss", "lr", "tokens_per_s", "forgetting-probe_loss", "eval-eval-mc.json"} <= set(
        charts
    )
    for c in charts.values():
        assert c["w"] > 50 and c["h"] > 20, c  # laid out and drawn
    assert len(charts["loss"]["lines"]) == 2 and all(x > 10 for x in charts["loss"]["lines"])
