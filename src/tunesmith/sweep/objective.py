"""What a sweep optimises: a trial's held-out loss, or one metric of an eval suite on its model.

``val_loss`` (the default) is the held-out loss the run logged for its final weights (the
``final`` record of ``metrics.jsonl``, else its last evaluation); ``SUITE.yaml:task/metric``
runs the suite on the trial's ``final/`` model and reads ``summary["task/metric"]``. Losses and
perplexities are minimised, every other metric maximised, unless ``--direction`` says otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tunesmith.errors import UserError

LOWER_IS_BETTER = ("loss", "perplexity", "error")


class ObjectiveError(UserError):
    """An objective that cannot be read: a bad ``--objective``, or a run that logged none."""


@dataclass(frozen=True)
class Objective:
    """``suite`` is None for the held-out loss; ``metric`` is ``task/metric`` otherwise."""

    name: str
    direction: str
    suite: str | None = None
    metric: str | None = None

    def value(self, run_dir: Path) -> float:
        """The objective of a finished trial's run dir."""
        if self.suite is None:
            return held_out_loss(run_dir)
        from tunesmith.eval.runner import evaluate_suite

        summary = evaluate_suite(str(run_dir), self.suite, progress=False)["summary"]
        if self.metric not in summary:
            raise ObjectiveError(
                f"--objective {self.name}: the suite reports no '{self.metric}' "
                f"(it reports: {', '.join(sorted(summary))})"
            )
        return float(summary[self.metric])


def parse_objective(text: str, direction: str | None) -> Objective:
    """``val_loss`` or ``SUITE.yaml:task/metric`` (the suite is loaded now, to fail early)."""
    if text == "val_loss":
        return Objective(text, direction or "minimize")
    suite, sep, metric = text.rpartition(":")
    if not sep or "/" not in metric or not suite:
        raise ObjectiveError(
            f"--objective {text!r}: expected val_loss or SUITE.yaml:task/metric "
            "(e.g. suites/demo.yaml:extract_json/json_match)"
        )
    from tunesmith.eval.suite import load_suite

    load_suite(suite)
    lower = any(word in metric.rsplit("/", 1)[-1] for word in LOWER_IS_BETTER)
    return Objective(text, direction or ("minimize" if lower else "maximize"), suite, metric)


def held_out_loss(run_dir: Path) -> float:
    """The held-out loss of the run's final weights, from ``metrics.jsonl``."""
    path = run_dir / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    final = [r for r in records if r.get("split") == "final" and r.get("val_loss") is not None]
    evals = [r for r in records if r.get("val_loss") is not None]
    chosen = final or evals
    if not chosen:
        raise ObjectiveError(
            f"{path}: the run logged no val_loss; give it held-out data (data.val_fraction or "
            "data.validation) or use --objective SUITE.yaml:task/metric"
        )
    return float(chosen[-1]["val_loss"])
