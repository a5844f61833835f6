"""Merge LoRA adapters into their base, merge several adapters, average checkpoints, export.

Every command writes to a temporary directory, checks the result against a reference (or, for
averaging, that it loads) and only then renames it into place; the verification report is
written beside the output as ``<out>.verify.json``.
"""

from tunesmith.merge.average import average_run, average_weights
from tunesmith.merge.common import MergeError
from tunesmith.merge.export import export_run
from tunesmith.merge.lora import merge_adapters, merge_run

__all__ = [
    "MergeError",
    "average_run",
    "average_weights",
    "export_run",
    "merge_adapters",
    "merge_run",
]
