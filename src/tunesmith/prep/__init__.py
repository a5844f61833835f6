"""``tunesmith prep``: de-duplicate, filter, scrub PII and split raw data, with a report.

Public API: :class:`PrepConfig` (load it with ``tunesmith.config.load_model(PrepConfig, path,
overrides)``), :func:`run_prep` and :class:`PrepResult`.
"""

from tunesmith.prep.config import PrepConfig
from tunesmith.prep.pipeline import PrepResult, run_prep

__all__ = ["PrepConfig", "PrepResult", "run_prep"]
