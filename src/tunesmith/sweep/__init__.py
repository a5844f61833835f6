"""Hyperparameter sweeps on Optuna (``tunesmith sweep``): a space of config keys, TPE sampling,
median pruning through the run lifecycle's evaluation hook, one run dir per trial, SQLite study."""

from tunesmith.sweep.report import SweepSummary
from tunesmith.sweep.study import SweepError, SweepSpec, run_sweep

__all__ = ["SweepError", "SweepSpec", "SweepSummary", "run_sweep"]
