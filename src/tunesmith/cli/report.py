"""``tunesmith report RUN [RUN ...] [--out FILE]``: a static HTML page per run, or a comparison."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("report", help="HTML report of a run (curves, evals, forgetting)")
    p.add_argument("runs", nargs="+", help="run dir(s); several give a comparison page")
    p.add_argument(
        "--out", help="HTML file (default: RUN/report.html, or ./report-compare.html for several)"
    )
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from tunesmith.report.run_page import write_report

    path = write_report(args.runs, args.out)
    print(f"wrote {path}")
    return 0
