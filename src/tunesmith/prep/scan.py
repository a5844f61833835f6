"""The streaming first pass: read, scrub, count, filter, hash; spool the survivors to disk.

Per row it keeps only a few bytes in memory (the :class:`~tunesmith.prep.ledger.Ledger`, a
64-bit text hash) and appends the MinHash signature to a file; the scrubbed canonical record of
every survivor goes to a spool file that the second pass routes to its split. Rows removed here
(malformed, empty, failing a quality filter) are written to the rejects file straight away.
"""

from __future__ import annotations

import json
import sys
from array import array
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from tqdm import tqdm

from tunesmith.data.records import DataError, Example
from tunesmith.prep.config import PrepConfig
from tunesmith.prep.dedup import MinHasher, SignatureStore
from tunesmith.prep.filters import QualityFilters
from tunesmith.prep.ledger import KEPT, REFERENCE, Ledger, Records, rule_code, tag_of
from tunesmith.prep.normalize import content_hash, dedup_text, normalize_text
from tunesmith.prep.pii import PiiScrubber
from tunesmith.prep.sources import Row, read_rows
from tunesmith.prep.tokens import TokenCounter, make_counter


def needs_signatures(cfg: PrepConfig) -> bool:
    """MinHash is needed for near-dedup, for the leakage check, and against a test file."""
    return cfg.dedup.near or cfg.splits.leakage_check or cfg.splits.test_file is not None


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)  # e.g. Parquet timestamps


@dataclass
class ScanResult:
    """What the first pass leaves behind: compact arrays, the signature file, counts."""

    records: Records
    item_rid: np.ndarray  # dedup item -> record id (test-file rows first, then survivors)
    hashes: np.ndarray  # uint64 normalised-text hash per dedup item
    signatures: SignatureStore | None
    survivors: np.ndarray  # record ids in the spool, in spool order
    pii_counts: dict[str, int]
    pii_records: int
    token_counter: str
    rows_per_source: dict[str, int]
    reference_skipped: int


class Scanner:
    """Runs the first pass over the test file (if any) and every input file."""

    def __init__(self, cfg: PrepConfig, work: Path, counter: TokenCounter | None = None) -> None:
        self.cfg = cfg
        self.counter = counter or make_counter(cfg.model.name_or_path, cfg.model.template)
        self.filters = QualityFilters(cfg.filters, cfg.max_length, self.counter)
        self.scrubber = PiiScrubber(cfg.pii.types, cfg.pii.phone_regions)
        self._quiet = PiiScrubber(cfg.pii.types, cfg.pii.phone_regions)  # error texts, test rows
        self.hasher = (
            MinHasher(cfg.dedup.num_perm, cfg.dedup.ngram) if needs_signatures(cfg) else None
        )
        path = work / "signatures.bin"
        self.store = SignatureStore(path, cfg.dedup.num_perm) if self.hasher else None
        self.ledger = Ledger()
        self._items = array("q")
        self._hashes = array("Q")
        self._survivors = array("q")
        self._pii_records = 0
        self._rows: Counter[str] = Counter()
        self._reference_skipped = 0

    def run(self, spool: TextIO, rejects: TextIO) -> ScanResult:
        self.spool, self.rejects = spool, rejects
        test_file = self.cfg.splits.test_file
        if test_file is not None:
            file = self.ledger.add_source(test_file)
            for row in read_rows(test_file, self.cfg.splits.test_format):
                self._reference(row, file)
        bar = tqdm(desc="prep: scan", unit=" rec", disable=not self.cfg.progress, file=sys.stderr)
        with bar:
            for spec in self.cfg.inputs:
                file = self.ledger.add_source(spec.path)
                for row in read_rows(spec.path, spec.format):
                    self._rows[spec.path] += 1
                    self._input(row, file, spec.tag)
                    bar.update()
        return self._result()

    # ------------------------------------------------------------------ rows

    def _scrub(self, ex: Example, scrubber: PiiScrubber) -> Example:
        return scrubber.scrub_example(ex, self.cfg.pii.fields)

    def _safe_error(self, err: DataError) -> DataError:
        """The error with any PII in its reason scrubbed (reasons may quote row values)."""
        if not self.cfg.pii.fields:
            return err
        return DataError(err.source, err.line, err.field_name, self._quiet.scrub(err.reason))

    def _reference(self, row: Row, file: int) -> None:
        if row.example is None:
            if self.cfg.on_error == "raise" and row.error is not None and not row.empty:
                raise self._safe_error(row.error)
            self._reference_skipped += 1
            return
        ex = self._scrub(row.example, self._quiet)
        rid = self.ledger.add(file, row.line, tag_of(None, None), REFERENCE)
        self._dedup_item(rid, ex)

    def _input(self, row: Row, file: int, file_tag: str | None) -> None:
        if row.example is None:
            self._bad_row(row, file, file_tag)
            return
        before = sum(self.scrubber.counts.values())
        ex = self._scrub(row.example, self.scrubber)
        self._pii_records += sum(self.scrubber.counts.values()) > before
        rid = self.ledger.add(file, row.line, tag_of(ex.meta, file_tag))
        try:
            n_tokens = self.counter.example(ex)
        except DataError as err:
            self._malformed(rid, err, ex.to_json())
            return
        self.ledger.set(rid, KEPT, n_tokens)
        verdict = self.filters.check(ex, n_tokens)
        if verdict is not None:
            self.ledger.set(rid, rule_code(verdict.rule))
            self._reject(verdict.rule, row.source, row.line, verdict.detail, record=ex.to_json())
            return
        self._dedup_item(rid, ex)
        self._survivors.append(rid)
        self.spool.write(dumps(ex.to_json()) + "\n")

    def _bad_row(self, row: Row, file: int, file_tag: str | None) -> None:
        assert row.error is not None
        raw = self.scrubber.scrub_json(row.raw) if self.cfg.pii.fields else row.raw
        rid = self.ledger.add(file, row.line, tag_of(raw, file_tag))
        if row.empty:
            self.ledger.set(rid, rule_code("empty"))
            self._reject("empty", row.source, row.line, row.error.reason, row=raw)
        else:
            self._malformed(rid, row.error, raw)

    def _malformed(self, rid: int, err: DataError, raw: Any) -> None:
        safe = self._safe_error(err)
        if self.cfg.on_error == "raise":
            raise safe
        self.ledger.set(rid, rule_code("malformed"))
        extra = {"field": safe.field_name, "row": raw}
        self._reject("malformed", safe.source, safe.line or 0, safe.reason, **extra)

    def _reject(self, rule: str, source: str, line: int, reason: str, **extra: Any) -> None:
        head = {"rule": rule, "source": source, "line": line, "reason": reason}
        self.rejects.write(dumps({**head, **extra}) + "\n")

    def _dedup_item(self, rid: int, ex: Example) -> None:
        normalized = normalize_text(dedup_text(ex))
        self._items.append(rid)
        self._hashes.append(content_hash(normalized))
        if self.hasher is not None and self.store is not None:
            self.store.append(self.hasher.signature(normalized))

    def _result(self) -> ScanResult:
        if self.store is not None:
            self.store.close()
        return ScanResult(
            records=self.ledger.freeze(),
            item_rid=np.frombuffer(self._items, dtype=np.int64).copy(),
            hashes=np.frombuffer(self._hashes, dtype=np.uint64).copy(),
            signatures=self.store,
            survivors=np.frombuffer(self._survivors, dtype=np.int64).copy(),
            pii_counts=dict(self.scrubber.counts),
            pii_records=self._pii_records,
            token_counter=self.counter.name,
            rows_per_source=dict(self._rows),
            reference_skipped=self._reference_skipped,
        )
