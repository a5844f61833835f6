"""``tunesmith report``: static, self-contained HTML pages for one run or a comparison of runs."""

from __future__ import annotations

from tunesmith.report.run_page import write_report

__all__ = ["write_report"]
