"""``run_prep``: raw files in, clean splits + rejects + report out, in bounded memory.

1. Scan (streaming): read, scrub PII, count tokens, filter; hash and MinHash the survivors,
   spooling their scrubbed records to disk (:mod:`tunesmith.prep.scan`).
2. Decide: duplicates, per-tag caps, splits, leakage (:mod:`tunesmith.prep.decide`).
3. Write (streaming): route the spooled records to their split files or to the rejects.

Everything is written to a temporary directory inside ``output_dir`` and moved into place at the
end, so a failed run never leaves half-written outputs behind.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.engine.lineage import record_prep
from tunesmith.prep.canaries import plant_canaries
from tunesmith.prep.config import PrepConfig
from tunesmith.prep.decide import decide
from tunesmith.prep.output import publish, write_outputs
from tunesmith.prep.report import build_report, write_report
from tunesmith.prep.scan import Scanner
from tunesmith.prep.split import SPLITS
from tunesmith.prep.tokens import TokenCounter


@dataclass(frozen=True)
class PrepResult:
    """Where the outputs are, and the report's numbers."""

    output_dir: Path
    report: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """The headline numbers (for the CLI)."""
        r = self.report
        removed = {rule: n for rule, n in r["removed_by_rule"].items() if n}
        return {
            "output_dir": str(self.output_dir),
            **r["counts"],
            "splits": r["splits"],
            "removed_by_rule": removed,
            "leakage_moved": r["leakage"]["moved_total"],
        }


def run_prep(cfg: PrepConfig, counter: TokenCounter | None = None) -> PrepResult:
    """Prepare ``cfg.inputs`` into ``cfg.output_dir`` (``counter`` overrides ``cfg.model``).

    Writes ``train.jsonl``, ``validation.jsonl``, ``test.jsonl``, ``rejects.jsonl``,
    ``report.json`` and ``report.html``.

    Raises:
        DataError: a file cannot be read, or (``on_error: raise``) a row is malformed.
    """
    start = time.perf_counter()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".prep-", dir=out))
    try:
        with (
            (work / "spool.jsonl").open("w", encoding="utf-8") as spool,
            (work / "rejects.jsonl").open("w", encoding="utf-8") as rejects,
        ):
            scan = Scanner(cfg, work, counter).run(spool, rejects)
        decisions = decide(scan.records, scan.item_rid, scan.hashes, scan.signatures, cfg)
        files = write_outputs(work, scan.survivors, scan.records, SPLITS, cfg.progress)
        report = build_report(cfg, scan, decisions, SPLITS, time.perf_counter() - start)
        write_report(work, report)
        publish(work, out, [*files, "report.json", "report.html"])
        if cfg.canaries:  # after the split files: the manifest below hashes train.jsonl with them
            plant_canaries(out, cfg.canaries, cfg.splits.seed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    raw = [i.path for i in cfg.inputs] + ([cfg.splits.test_file] if cfg.splits.test_file else [])
    record_prep(out, raw, files, cfg.model_dump_json())  # lineage.json: the prep manifest
    return PrepResult(output_dir=out, report=report)
