"""``tunesmith sweep CONFIG --space SPACE.yaml --trials N``: a hyperparameter search (Optuna)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "sweep", help="hyperparameter search over a config (Optuna TPE + median pruning)"
    )
    p.add_argument("config", help="the training config every trial starts from")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides for every trial")
    p.add_argument("--space", required=True, help="YAML: config key -> distribution")
    p.add_argument("--trials", type=int, required=True, help="finished trials to reach")
    p.add_argument("--jobs", type=int, default=1, help="trials run at once, one process each")
    p.add_argument(
        "--objective",
        default="val_loss",
        help="val_loss (held-out loss, default) or SUITE.yaml:task/metric",
    )
    p.add_argument(
        "--direction",
        choices=["minimize", "maximize"],
        default=None,
        help="default: minimize losses/perplexity, maximize other suite metrics",
    )
    p.add_argument("--resume", action="store_true", help="continue the sweep in --out")
    p.add_argument("--out", required=True, help="sweep directory (trials, study.db, report)")
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run (or resume) the sweep; print the table of trials and where the report is."""
    from tunesmith.sweep import SweepSpec, run_sweep

    spec = SweepSpec(
        config=str(args.config),
        overrides=list(args.overrides),
        space=str(args.space),
        trials=args.trials,
        jobs=args.jobs,
        objective=args.objective,
        direction=args.direction,
        out=str(Path(args.out)),
        seed=args.seed,
    )
    summary = run_sweep(spec, resume=args.resume)
    print(summary.table)
    print(f"\nbest config: {summary.best_config}\nreport: {summary.report}")
    return 0
