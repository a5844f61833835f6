"""``tunesmith doctor``: every pre-flight check, a few rendered examples, a timed step, a report.

It uses the exact pipeline ``train`` would (same config, tokenizer, template, max_length,
train_on, truncation, packing) and writes nothing but the HTML report. SFT configs get every
check and the timed step (:func:`diagnose`); dpo, reward, grpo, ppo and classify configs get
their method's record checks and rendered records (:func:`diagnose_method`).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import jinja2

from tunesmith.checks.checks import Check, check_padding_side, sample_batch
from tunesmith.checks.lengths import LengthStats, check_lengths, full_lengths, length_stats
from tunesmith.checks.preflight import cheap_checks
from tunesmith.checks.render import RenderedExample, check_line, render_terminal, rendered
from tunesmith.config import BaseRunConfig, SFTConfig
from tunesmith.data.dataset import PreparedData, make_rows, prepare_data
from tunesmith.data.records import DataError
from tunesmith.data.templates import ChatTemplateError
from tunesmith.engine.precision import resolve_precision
from tunesmith.models.load import load_tokenizer, pick_device, resolve_model
from tunesmith.report.doctor_page import HtmlReport, render_html

MEMORY_NOTE = "memory estimate: not available (planner not implemented)"


@dataclass
class DoctorResult:
    """What ``doctor`` found; ``exit_code`` is 1 when any check FAILs."""

    checks: list[Check]
    examples: list[RenderedExample]
    html_path: Path
    settings: dict[str, str]
    lengths: LengthStats | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if any(c.failed for c in self.checks) else 0


def default_html_path(cfg: BaseRunConfig) -> Path:
    """``<train.output_dir>/doctor-<timestamp>.html``."""
    return Path(cfg.train.output_dir) / f"doctor-{time.strftime('%Y%m%d-%H%M%S')}.html"


def use_color(stream: TextIO) -> bool:
    """ANSI colour only on a terminal, and never with ``NO_COLOR`` set."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


def _settings(cfg: SFTConfig, model_path: Path | str, data: PreparedData | None) -> dict[str, str]:
    d = cfg.data
    out = {
        "model": str(model_path),
        "template": d.template,
        "max_length": str(d.max_length),
        "train_on": d.train_on,
        "truncation": d.truncation,
        "packing": str(d.packing).lower(),
        "adapter": cfg.adapter.type,
    }
    if data is not None:
        out["data"] = (
            f"{len(data.train.encoded)} train / {len(data.val.encoded)} val examples, "
            f"{len(data.rejects)} rejected"
        )
    return out


def _model_checks(
    cfg: SFTConfig,
    model_path: Path,
    tokenizer: Any,
    data: PreparedData,
    rows: list[tuple[int, ...]],
) -> tuple[Check, list[str]]:
    """Check 7 and the timed step (both need the model); imported lazily (torch-heavy)."""
    from tunesmith.checks.model_checks import build_model, check_packing_isolation, time_train_step

    device = pick_device(cfg.train.device)
    precision = resolve_precision(cfg.train.precision, device)
    model = build_model(cfg, model_path, device)
    if cfg.data.packing:
        packing = check_packing_isolation(
            model, data.train.encoded, tokenizer.pad_token_id, device, precision
        )
    else:
        packing = Check("packing", "SKIP", "data.packing=false: no packed rows")
    timing = time_train_step(cfg, model, tokenizer, data, rows, device, precision)
    return packing, [f"{timing.summary()} on {device} ({precision})"]


def diagnose(
    cfg: SFTConfig, *, n_examples: int = 3, use_model: bool = True, html_path: Path | None = None
) -> DoctorResult:
    """Run every check on the pipeline ``cfg`` describes (nothing is printed or written)."""
    html_path = html_path or default_html_path(cfg)
    model_path = resolve_model(cfg.model.name_or_path)
    tokenizer = load_tokenizer(model_path)
    try:
        data = prepare_data(cfg.data, tokenizer)
    except (DataError, ChatTemplateError, jinja2.TemplateError) as e:
        settings = _settings(cfg, model_path, None)
        return DoctorResult([Check("data", "FAIL", str(e))], [], html_path, settings)
    checks = cheap_checks(cfg, tokenizer, data)
    rows = make_rows(data.train.encoded, cfg.data.packing, cfg.data.max_length)
    batch, row_examples = sample_batch(
        data.train.encoded,
        rows,
        tokenizer.pad_token_id,
        cfg.data.packing,
        cfg.train.micro_batch_size,
    )
    checks.insert(3, check_padding_side(batch, row_examples, tokenizer, cfg.data.packing))
    notes: list[str] = []
    if use_model:
        packing, notes = _model_checks(cfg, model_path, tokenizer, data, rows)
    else:
        packing = Check("packing", "SKIP", "--no-model given")
        notes = ["training step: not timed (--no-model)"]
    lengths = length_stats(full_lengths(data, tokenizer, cfg.data), cfg.data.max_length)
    checks += [packing, check_lengths(lengths)]
    examples = [
        rendered(enc, tokenizer, f"{ex.source}:{ex.line}")
        for ex, enc in zip(data.train.examples[:n_examples], data.train.encoded, strict=False)
    ]
    settings = _settings(cfg, model_path, data)
    return DoctorResult(checks, examples, html_path, settings, lengths, [*notes, MEMORY_NOTE])


def _method_settings(cfg: BaseRunConfig, model_path: Path, data: str) -> dict[str, str]:
    d = cfg.data
    out = {"method": cfg.method, "model": str(model_path)}
    for key in ("template", "max_length", "max_prompt_length"):
        if hasattr(d, key):
            out[key] = str(getattr(d, key))
    return {**out, "data": data}


def diagnose_method(
    cfg: BaseRunConfig, *, n_examples: int = 3, html_path: Path | None = None
) -> DoctorResult:
    """``diagnose`` for dpo, reward, grpo, ppo and classify: the method's record checks
    (:mod:`tunesmith.checks.method_doctor`); the checks that run the model are SFT's only."""
    from tunesmith.checks.method_doctor import diagnose_records

    html_path = html_path or default_html_path(cfg)
    model_path, found = diagnose_records(cfg, n_examples)
    notes = [
        *found.notes,
        f"training step: skipped for method {cfg.method} (the timed step is SFT-only)",
        MEMORY_NOTE,
    ]
    settings = _method_settings(cfg, model_path, found.data)
    return DoctorResult(found.checks, found.examples, html_path, settings, found.lengths, notes)


def print_result(result: DoctorResult, out: TextIO, color: bool) -> None:
    """Examples, then one line per check, then the timing and memory notes."""
    settings = ", ".join(f"{k} {v}" for k, v in result.settings.items())
    print(f"tunesmith doctor: {settings}\n", file=out)
    marker = "green" if color else "[[...]]"
    for k, ex in enumerate(result.examples, 1):
        print(f"example {k}/{len(result.examples)} {ex.header()} (trained: {marker})", file=out)
        print(render_terminal(ex, color) + "\n", file=out)
    for check in result.checks:
        print(check_line(check, color), file=out)
    print(file=out)
    for note in result.notes:
        print(note, file=out)


def run_doctor(
    cfg: BaseRunConfig,
    *,
    html_path: Path | None = None,
    n_examples: int = 3,
    use_model: bool = True,
    out: TextIO | None = None,
    title: str = "tunesmith doctor",
) -> int:
    """Diagnose any method's config (SFT: :func:`diagnose`; others: :func:`diagnose_method`),
    print to ``out`` (default stdout; colour on a TTY), write the HTML report; returns the exit
    code: 1 on any FAIL, else 0. ``use_model`` only matters for SFT."""
    out = out if out is not None else sys.stdout
    if isinstance(cfg, SFTConfig):
        result = diagnose(cfg, n_examples=n_examples, use_model=use_model, html_path=html_path)
    else:
        result = diagnose_method(cfg, n_examples=n_examples, html_path=html_path)
    print_result(result, out, use_color(out))
    page = HtmlReport(
        title, result.settings, result.checks, result.examples, result.lengths, result.notes
    )
    result.html_path.parent.mkdir(parents=True, exist_ok=True)
    result.html_path.write_text(render_html(page), encoding="utf-8")
    fails = sum(c.failed for c in result.checks)
    verdict = f"{fails} check(s) FAILED" if fails else "no check failed"
    print(f"report: {result.html_path}\n{verdict}", file=out, flush=True)
    return result.exit_code
