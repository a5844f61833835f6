"""The prep report: ``report.json`` (counts only, never record text) and ``report.html``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.prep.config import PrepConfig
from tunesmith.prep.decide import Decisions
from tunesmith.prep.dedup import lsh_params
from tunesmith.prep.ledger import KEPT, REFERENCE, RULES, Records, rule_code
from tunesmith.prep.scan import ScanResult
from tunesmith.prep.split import SPLITS
from tunesmith.report.prep_page import render_html

HISTOGRAM_BINS = 20


def _length_stats(lengths: np.ndarray, edges: np.ndarray) -> dict[str, Any]:
    counts, _ = np.histogram(lengths, bins=edges)
    stats: dict[str, Any] = {"count": len(lengths)}
    if len(lengths):
        stats |= {
            "min": int(lengths.min()),
            "mean": round(float(lengths.mean()), 2),
            "p50": float(np.percentile(lengths, 50)),
            "p95": float(np.percentile(lengths, 95)),
            "max": int(lengths.max()),
        }
    stats["histogram"] = {"edges": [float(e) for e in edges], "counts": counts.tolist()}
    return stats


def _tag_counts(records: Records, kept: np.ndarray, splits: tuple[str, ...]) -> dict[str, Any]:
    n_tags = len(records.tags)
    inputs = records.is_input

    def count(mask: np.ndarray) -> list[int]:
        return np.bincount(records.tag[mask], minlength=n_tags).tolist()

    columns: dict[str, list[int]] = {"input": count(inputs), "kept": count(kept)}
    columns["capped"] = count(records.status == rule_code("cap"))
    for code, name in enumerate(splits, 1):
        columns[name] = count(kept & (records.split == code))
    return {
        tag: {key: values[i] for key, values in columns.items()}
        for i, tag in enumerate(records.tags)
        if columns["input"][i]
    }


def _dedup_section(cfg: PrepConfig, decisions: Decisions) -> dict[str, Any]:
    bands, rows = lsh_params(cfg.dedup.threshold, cfg.dedup.num_perm)
    return {
        **cfg.dedup.model_dump(),
        "lsh_bands": bands,
        "lsh_rows_per_band": rows,
        "verified_near_pairs": decisions.near_pairs,
    }


def _leakage_section(cfg: PrepConfig, scan: ScanResult, decisions: Decisions) -> dict[str, Any]:
    status = scan.records.status
    return {
        "checked": cfg.splits.leakage_check,
        "duplicate_links": decisions.links,
        "moved": decisions.moved,
        "moved_total": sum(decisions.moved.values()),
        "test_file": cfg.splits.test_file,
        "test_file_rows": int((status == REFERENCE).sum()),
        "test_file_rows_skipped": scan.reference_skipped,
        "removed_test_overlap": int((status == rule_code("test_overlap")).sum()),
    }


def build_report(
    cfg: PrepConfig,
    scan: ScanResult,
    decisions: Decisions,
    splits: tuple[str, ...],
    seconds: float,
) -> dict[str, Any]:
    """Every number of the run, JSON-ready; holds counts and settings, never record text."""
    records = scan.records
    inputs = records.is_input
    kept = inputs & (records.status == KEPT)
    n_input = int(inputs.sum())
    lengths = records.length[kept]
    edges = np.histogram_bin_edges(lengths, bins=HISTOGRAM_BINS) if len(lengths) else np.arange(2)
    return {
        "inputs": [
            {"path": s.path, "tag": s.tag, "rows": scan.rows_per_source.get(s.path, 0)}
            for s in cfg.inputs
        ],
        "token_counter": scan.token_counter,
        "counts": {
            "input": n_input,
            "kept": int(kept.sum()),
            "rejected": n_input - int(kept.sum()),
        },
        "removed_by_rule": {r: int((records.status == rule_code(r)).sum()) for r in RULES},
        "splits": {
            name: int((kept & (records.split == c)).sum()) for c, name in enumerate(splits, 1)
        },
        "split_ratios": dict(zip(SPLITS, decisions.ratios, strict=True)),
        "tags": _tag_counts(records, kept, splits),
        "pii": {
            "fields": list(cfg.pii.fields),
            "replaced": {t: scan.pii_counts.get(t, 0) for t in cfg.pii.types},
            "records_with_pii": scan.pii_records,
        },
        "dedup": _dedup_section(cfg, decisions),
        "leakage": _leakage_section(cfg, scan, decisions),
        "token_lengths": {
            name: _length_stats(records.length[kept & (records.split == c)], edges)
            for c, name in enumerate(splits, 1)
        },
        "files": [f"{name}.jsonl" for name in splits]
        + ["rejects.jsonl", "report.json", "report.html"],
        "seconds": round(seconds, 3),
        "records_per_second": round(n_input / seconds, 1) if seconds > 0 else None,
        "config": cfg.model_dump(mode="json"),
    }


def write_report(work: Path, report: dict[str, Any]) -> None:
    (work / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (work / "report.html").write_text(render_html(report), encoding="utf-8")
