"""A hyperparameter sweep on Optuna: TPE proposes, a median pruner stops bad trials early.

The algorithm, top to bottom:
  1. check the space against the method's config and the objective (before any training);
  2. open the study in ``OUT/study.db`` (SQLite); on ``--resume`` mark the trials a killed sweep
     left RUNNING as failed (``interrupted``), so they are run again and nothing finished is;
  3. until ``--trials`` trials have finished: sample parameters, train one ordinary run dir
     ``OUT/trials/trial-NNNN`` in this process, with an evaluation hook that reports every
     held-out value to the pruner (a pruned run ends at that evaluation with a ``PRUNED``
     marker), and record its objective; ``--jobs J`` runs J such workers as processes sharing
     the study, each claiming its next trial under a file lock so none is run twice;
  4. write the table of trials, ``best.yaml`` and ``report.html`` (:mod:`tunesmith.sweep.report`).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError
from tunesmith.sweep.objective import Objective, parse_objective
from tunesmith.sweep.space import Param, config_data, load_space, with_params

STUDY = "sweep"
SPEC_FILE = "sweep.json"
LOCK_FILE = "sweep.lock"
# What may change when a sweep is resumed: how many trials, and how many at once.
RESUMABLE = frozenset({"trials", "jobs"})


class SweepError(UserError):
    """A sweep that cannot start or continue as asked."""


@dataclass(frozen=True)
class SweepSpec:
    """Everything a sweep (and each of its worker processes) needs; saved as ``sweep.json``."""

    config: str
    overrides: list[str]
    space: str
    trials: int
    out: str
    jobs: int = 1
    objective: str = "val_loss"
    direction: str | None = None
    seed: int = 0


@dataclass
class Sweep:
    """A sweep's parsed parts: the base config mapping, the space and the objective."""

    spec: SweepSpec
    data: dict[str, Any]
    space: list[Param]
    objective: Objective

    @classmethod
    def load(cls, spec: SweepSpec) -> Sweep:
        data = config_data(spec.config, spec.overrides)
        return cls(spec, data, load_space(spec.space, data), parse_objective(spec.objective,
                   spec.direction))  # fmt: skip

    @property
    def out(self) -> Path:
        return Path(self.spec.out)

    @property
    def storage(self) -> str:
        return f"sqlite:///{(self.out / 'study.db').resolve()}"


# ----------------------------------------------------------------------------- the study


def open_study(sweep: Sweep, create: bool = False, worker: int = 0) -> Any:
    """The study in ``OUT/study.db``: TPE (seeded, offset by the trials already run and by the
    worker, so a resumed sweep or a second worker does not propose the same points again) and a
    median pruner."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(sweep.storage)
    started = 0
    if not create:
        started = len(optuna.load_study(study_name=STUDY, storage=storage).trials)
    startup = max(2, min(10, sweep.spec.trials // 2))
    sampler = optuna.samplers.TPESampler(
        seed=sweep.spec.seed + started + 7919 * worker, n_startup_trials=startup
    )
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    return optuna.create_study(
        study_name=STUDY,
        storage=storage,
        direction=sweep.objective.direction,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=not create,
    )


def fail_interrupted(study: Any) -> int:
    """Mark the trials a killed sweep left RUNNING as failed (``interrupted``): they do not
    count as finished, so the sweep runs replacements; finished trials are never repeated."""
    from optuna.trial import TrialState

    stale = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    for t in stale:
        study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    return len(stale)


def finished(study: Any) -> int:
    """Trials that count toward ``--trials``: complete, pruned, or failed by their own error."""
    from optuna.trial import TrialState

    counted = (TrialState.COMPLETE, TrialState.PRUNED)
    trials = study.get_trials(deepcopy=False)
    own_failures = [t for t in trials if t.state == TrialState.FAIL]
    return sum(t.state in counted for t in trials) + sum(
        not t.user_attrs.get("interrupted") for t in own_failures
    )


# ----------------------------------------------------------------------------- one trial


def _report(trial: Any, maximize: bool, step: int, value: float, higher_is_better: bool) -> bool:
    """The evaluation hook: give the pruner the held-out value (sign-flipped when the run's
    metric points the other way from the objective); True when the trial should stop."""
    trial.report(value if higher_is_better == maximize else -value, step)
    return bool(trial.should_prune())


def run_trial(sweep: Sweep, trial: Any) -> float:
    """Train one trial's run dir with the sampled parameters; return its objective."""
    import optuna

    from tunesmith.config import load_config
    from tunesmith.engine.run import EVAL_HOOK, Pruned

    params = {p.key: p.suggest(trial) for p in sweep.space}
    name = f"trial-{trial.number:04d}"
    fixed = {"train.output_dir": str(sweep.out / "trials"), "train.run_name": name}
    run_dir = sweep.out / "trials" / name
    trial.set_user_attr("run_dir", str(run_dir))
    maximize = sweep.objective.direction == "maximize"

    def hook(step: int, value: float, higher_is_better: bool) -> bool:
        return _report(trial, maximize, step, value, higher_is_better)

    EVAL_HOOK.append(hook)
    try:
        cfg = load_config(None, base=with_params(sweep.data, {**params, **fixed}))
        importlib.import_module(f"tunesmith.methods.{cfg.method}").run(cfg)
        return sweep.objective.value(run_dir)
    except Pruned as pruned:
        raise optuna.TrialPruned(str(pruned)) from None
    except Exception as err:
        trial.set_user_attr("error", f"{type(err).__name__}: {err}")
        raise
    finally:
        EVAL_HOOK.remove(hook)


def claim_trial(study: Any, spec: SweepSpec) -> Any | None:
    """A new trial of ``study``, or None once ``spec.trials`` are finished or running. Counting
    and creating happen under an exclusive lock on ``OUT/sweep.lock``: two ``--jobs`` workers
    that look at the same moment cannot both start the last trial."""
    import fcntl

    from optuna.trial import TrialState

    with (Path(spec.out) / LOCK_FILE).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        if finished(study) + running >= spec.trials:
            return None
        return study.ask()  # RUNNING in study.db before the lock is released


def work(spec: SweepSpec, worker: int = 0) -> None:
    """One worker: claim a trial, train it, record its outcome; until ``spec.trials`` are
    finished or running."""
    import optuna
    from optuna.trial import TrialState

    sweep = Sweep.load(spec)
    study = open_study(sweep, worker=worker)
    while (trial := claim_trial(study, spec)) is not None:
        try:
            value = run_trial(sweep, trial)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
            continue
        except Exception as err:  # a diverged run, a refused config: that trial, not the sweep
            print(f"[tunesmith] sweep: trial {trial.number} failed: {err}", file=sys.stderr)
            study.tell(trial, state=TrialState.FAIL)
            continue
        study.tell(trial, value)


# ----------------------------------------------------------------------------- the sweep


def _check_resume(out: Path, spec: SweepSpec, resume: bool) -> None:
    """A new sweep needs a fresh directory; a resumed one the same config, space and objective."""
    saved = out / SPEC_FILE
    if not resume:
        if (out / "study.db").exists():
            raise SweepError(f"{out} already holds a sweep; pass --resume to continue it")
        return
    if not saved.is_file() or not (out / "study.db").is_file():
        raise SweepError(f"--resume: {out} holds no sweep to continue (no {SPEC_FILE}/study.db)")
    before = json.loads(saved.read_text(encoding="utf-8"))
    now = asdict(spec)
    changed = [k for k in now if k not in RESUMABLE and before.get(k) != now[k]]
    if changed:
        detail = "; ".join(f"{k}: {before.get(k)!r} -> {now[k]!r}" for k in changed)
        raise SweepError(f"--resume: the sweep in {out} was started differently ({detail})")


def _spawn_workers(spec: SweepSpec) -> None:
    """``--jobs J``: J worker processes on the shared study, the cores split between them."""
    threads = str(max(1, (os.cpu_count() or 1) // spec.jobs))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "TUNESMITH_SWEEP_THREADS": threads}
    spec_file = str(Path(spec.out) / SPEC_FILE)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tunesmith.sweep.worker", spec_file, str(i)], env=env
        )
        for i in range(spec.jobs)
    ]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SweepError(f"sweep worker(s) exited with {codes}; see their output above")


def run_sweep(
    spec: SweepSpec, resume: bool = False, enqueue: list[dict[str, Any]] | None = None
) -> Any:
    """Run (or continue) the sweep; returns its :class:`~tunesmith.sweep.report.SweepSummary`.
    ``enqueue``: parameter sets to try first (a known-good config, say), before TPE proposes."""
    from tunesmith.sweep.report import write_outputs

    if spec.trials < 1 or spec.jobs < 1:
        raise SweepError("--trials and --jobs must be at least 1")
    sweep = Sweep.load(spec)  # a bad space, config or objective fails before anything is written
    out = sweep.out
    _check_resume(out, spec, resume)
    out.mkdir(parents=True, exist_ok=True)
    (out / SPEC_FILE).write_text(json.dumps(asdict(spec), indent=2) + "\n", encoding="utf-8")
    study = open_study(sweep, create=not resume)
    interrupted = fail_interrupted(study)
    for params in enqueue or []:
        study.enqueue_trial(params, skip_if_exists=True)
    if interrupted:
        print(f"[tunesmith] sweep: {interrupted} interrupted trial(s) will be run again")
    print(f"[tunesmith] sweep: {finished(study)} of {spec.trials} trials finished; study {out}")
    if spec.jobs == 1:
        work(spec)
    else:
        _spawn_workers(spec)
    return write_outputs(sweep, open_study(sweep))
