"""Tracking backends: metrics.jsonl always; TensorBoard event files and an MLflow file store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.config import ConfigError, load_config
from tunesmith.engine.metrics_log import MetricsLog, NullLog, read_metrics
from tunesmith.engine.tracking import TrackingLog, open_metrics_log, scalars

RECORDS = [
    {"step": 1, "split": "train", "loss": 2.5, "lr": 1e-3, "note": "text"},
    {"step": 2, "split": "train", "loss": 2.0, "lr": 5e-4},
    {"step": 2, "split": "val", "val_loss": 2.2, "val_loss_by_tag": {"math": 2.1, "chat": 2.3}},
]


def _cfg(tmp_path: Path, **tracking: object):
    base = {
        "method": "sft",
        "data": {"train": "unused.jsonl"},
        "train": {"output_dir": str(tmp_path / "runs")},
        "tracking": tracking,
    }
    return load_config(None, base=base)


def _write_all(log: MetricsLog) -> None:
    for r in RECORDS:
        log.write(r)
    log.close()


def test_scalars_flatten_numbers_only() -> None:
    got = dict(scalars(RECORDS[2]))
    assert got == {"val_loss": 2.2, "val_loss_by_tag/math": 2.1, "val_loss_by_tag/chat": 2.3}
    assert dict(scalars({"step": 1, "ok": True, "x": float("nan"), "y": 3})) == {"y": 3.0}


def test_no_backends_is_plain_jsonl(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    assert cfg.tracking.backends == []
    log = open_metrics_log(tmp_path, cfg, is_main=True)
    assert type(log) is MetricsLog
    _write_all(log)
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 2]
    assert isinstance(open_metrics_log(tmp_path, cfg, is_main=False), NullLog)


def test_unknown_backend_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tracking\.backends\.0"):
        _cfg(tmp_path, backends=["wandb"])


def test_tensorboard_event_files_hold_the_scalars(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    run.mkdir()
    log = open_metrics_log(run, _cfg(tmp_path, backends=["tensorboard"]), is_main=True)
    _write_all(log)
    assert len(read_metrics(run / "metrics.jsonl")) == 3  # jsonl is still written
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    loss = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    assert loss == [(1, pytest.approx(2.5)), (2, pytest.approx(2.0))]
    assert acc.Scalars("val/val_loss_by_tag/chat")[0].value == pytest.approx(2.3)
    assert "train/note" not in acc.Tags()["scalars"]


def test_mlflow_file_store_run_params_and_metrics(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"file:{tmp_path / 'mlruns'}"
    run = tmp_path / "run"
    run.mkdir()
    cfg = _cfg(tmp_path, backends=["mlflow"], mlflow_uri=uri, experiment="exp-t")
    log = open_metrics_log(run, cfg, is_main=True)
    assert isinstance(log, TrackingLog)
    _write_all(log)
    marker = json.loads((run / "mlflow_run.json").read_text())
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("exp-t")
    assert exp is not None
    found = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in found] == [marker["run_id"]]
    mrun = found[0]
    assert mrun.info.run_name == "run" and mrun.info.status == "FINISHED"
    assert mrun.data.params["optim.lr"] == json.dumps(cfg.optim.lr)
    history = client.get_metric_history(marker["run_id"], "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 2.5), (2, 2.0)]
    assert mrun.data.metrics["val/val_loss"] == pytest.approx(2.2)

    # resuming the run logs into the same MLflow run
    again = open_metrics_log(run, cfg, is_main=True)
    again.write({"step": 3, "split": "train", "loss": 1.5})
    again.close()
    assert len(client.search_runs([exp.experiment_id])) == 1
    steps = [m.step for m in client.get_metric_history(marker["run_id"], "train/loss")]
    assert sorted(steps) == [1, 2, 3]


def test_a_failing_backend_is_reported_and_dropped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    class Broken:
        name = "broken"

        def write(self, record: dict) -> None:
            raise OSError("disk full")

        def close(self) -> None:
            pass

    log = TrackingLog(tmp_path / "metrics.jsonl", [Broken()])
    _write_all(log)
    assert "tracking: broken failed (disk full); disabled" in capsys.readouterr().err
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 3 and log.sinks == []
