"""Experiment tracking: every metrics record goes to ``metrics.jsonl`` and, when the config's
``tracking.backends`` asks, to TensorBoard event files and an MLflow run as well.

A record ``{"step": 7, "split": "train", "loss": 1.2, ...}`` becomes the scalars ``train/loss``
(and so on) at step 7 in each backend; nested dicts are flattened with ``/``
(``val/val_loss_by_tag/math``); strings, booleans and None stay in ``metrics.jsonl`` only.

MLflow: the run is created in ``tracking.mlflow_uri`` (default: the local file store
``file:<output_dir>/mlruns``) under ``tracking.experiment`` (default: the method), named after the
run dir, with the resolved config as parameters; its id is kept in ``<run dir>/mlflow_run.json``
so that ``train.resume=true`` continues the same MLflow run.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from tunesmith.engine.metrics_log import MetricsLog, NullLog

SKIP_KEYS = frozenset({"step", "split", "time"})


class Sink(Protocol):
    name: str

    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def scalars(record: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """``(name, value)`` for every finite number in ``record`` (nested dicts joined by ``/``)."""
    for key, value in record.items():
        if not prefix and key in SKIP_KEYS:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from scalars(value, f"{name}/")
        elif (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        ):
            yield name, float(value)


def _tagged(record: dict[str, Any]) -> tuple[int, list[tuple[str, float]]]:
    split = str(record.get("split", "train"))
    return int(record.get("step", 0) or 0), [(f"{split}/{k}", v) for k, v in scalars(record)]


class TensorBoardSink:
    """Scalars into ``<log_dir>`` (``tensorboard --logdir RUN/tensorboard``)."""

    name = "tensorboard"

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def write(self, record: dict[str, Any]) -> None:
        step, values = _tagged(record)
        for tag, value in values:
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _flat_params(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat_params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value)[:500]
    return out


class MlflowSink:
    """One MLflow run per run dir (reused on resume), logged with ``MlflowClient``."""

    name = "mlflow"

    def __init__(self, uri: str, experiment: str, run_dir: Path, params: dict[str, Any]) -> None:
        if uri.startswith("file:"):  # MLflow 3 keeps the file store behind an explicit opt-in
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.marker = run_dir / "mlflow_run.json"
        if self.marker.is_file():
            self.run_id = str(json.loads(self.marker.read_text())["run_id"])
            self.client.update_run(self.run_id, status="RUNNING")
            return
        exp = self.client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(experiment)
        run = self.client.create_run(exp_id, run_name=run_dir.name)
        self.run_id = run.info.run_id
        flat = [Param(k, v) for k, v in _flat_params(params).items()]
        for start in range(0, len(flat), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=flat[start : start + 100])
        self.marker.write_text(json.dumps({"tracking_uri": uri, "run_id": self.run_id}))

    def write(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        step, values = _tagged(record)
        stamp = int(float(record.get("time", time.time())) * 1000)
        metrics = [Metric(tag, value, stamp, step) for tag, value in values]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class TrackingLog(MetricsLog):
    """``metrics.jsonl`` plus every configured backend. A backend that fails is reported once on
    stderr and switched off; ``metrics.jsonl`` (the record of truth) keeps every line."""

    def __init__(self, path: Path, sinks: list[Sink]) -> None:
        super().__init__(path)
        self.sinks = list(sinks)

    def _each(self, call: str, *args: Any) -> None:
        for sink in list(self.sinks):
            try:
                getattr(sink, call)(*args)
            except Exception as e:  # a tracking server must not stop training
                print(f"[tunesmith] tracking: {sink.name} failed ({e}); disabled", file=sys.stderr)
                self.sinks.remove(sink)

    def write(self, record: dict[str, Any]) -> None:
        stamped = {"time": round(time.time(), 3), **record}
        super().write(stamped)
        self._each("write", stamped)

    def close(self) -> None:
        super().close()
        self._each("close")


def _sinks(run_dir: Path, cfg: Any) -> list[Sink]:
    tracking = getattr(cfg, "tracking", None)
    backends = list(getattr(tracking, "backends", []) or [])
    sinks: list[Sink] = []
    if "tensorboard" in backends:
        sinks.append(TensorBoardSink(run_dir / "tensorboard"))
    if "mlflow" in backends:
        uri = tracking.mlflow_uri or f"file:{(run_dir.parent / 'mlruns').resolve()}"
        experiment = tracking.experiment or str(getattr(cfg, "method", "tunesmith"))
        params = cfg.model_dump(mode="json") if hasattr(cfg, "model_dump") else {}
        sinks.append(MlflowSink(uri, experiment, run_dir, params))
    return sinks


def open_metrics_log(run_dir: Path, cfg: Any, is_main: bool = True) -> MetricsLog:
    """The metrics log of a run: :class:`NullLog` off rank 0; else ``metrics.jsonl``, fanned out
    to the backends in ``cfg.tracking`` (configs without a tracking section: jsonl only)."""
    if not is_main:
        return NullLog()
    sinks = _sinks(run_dir, cfg)
    path = run_dir / "metrics.jsonl"
    return TrackingLog(path, sinks) if sinks else MetricsLog(path)
