#!/usr/bin/env python3
"""Render the README's performance table (Markdown) from a ``compare_trl.py`` result JSON.

Usage: ``python benchmarks/make_table.py [benchmarks/results/compare_trl_sft.json]``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DEFAULT = Path(__file__).resolve().parent / "results" / "compare_trl_sft.json"

HEADER = (
    "| Run | Precision | Median s/step | CPU-s/step | Assistant tok/s | Peak RSS "
    "| Padding waste | MFU | × TRL: s/step | × TRL: CPU-s/step | × TRL: tok/s | × TRL: RSS |\n"
    "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
)


def _label(res: dict[str, Any], packed_rows: int) -> str:
    if res["tool"] == "trl":
        return {
            "padding_free": "TRL + PEFT (padding_free, 8 / step)",
            "default": "TRL + PEFT, its defaults (padded, checkpointing, 8 / step)",
        }.get(res["layout"], "TRL + PEFT (padded, 8 / step)")
    if res["layout"] == "packed":
        return f"tunesmith, packed ({packed_rows} rows ≈ 8 examples / step)"
    return "tunesmith, unpacked (8 / step)"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _row(name: str, res: dict[str, Any], ratio: dict[str, Any] | None, packed_rows: int) -> str:
    r = ratio or {}
    return (
        f"| {_label(res, packed_rows)} | {res['precision']} | {res['median_step_seconds']:.2f} "
        f"| {_num(res.get('median_step_cpu_seconds'), '.2f')} "
        f"| {res['assistant_tokens_per_s']:.0f} | {res['peak_rss_gib']:.2f} GiB "
        f"| {res['padding_waste']:.1%} | {res['mfu']:.1%} "
        f"| {_ratio(r.get('median_step_seconds'))} | {_ratio(r.get('median_step_cpu_seconds'))} "
        f"| {_ratio(r.get('assistant_tokens_per_s'))} | {_ratio(r.get('peak_rss_gib'))} |"
    )


def _order(item: tuple[str, dict[str, Any]]) -> tuple[int, int, int]:
    res = item[1]
    return (
        ["fp32", "bf16"].index(res["precision"]) if res["precision"] in ("fp32", "bf16") else 2,
        0 if res["tool"] == "trl" else 1,
        0 if res["layout"] == "unpacked" else 1,
    )


def _context(report: dict[str, Any]) -> str:
    m, s, d = report["machine"], report["settings"], report["data"]
    v = m["versions"]
    lengths = d["token_lengths"]
    return (
        f"SmolLM2-135M-Instruct, LoRA r={s['lora']['r']} (alpha {s['lora']['alpha']}, dropout "
        f"{s['lora']['dropout']}) on all linear layers, {d['n_examples']} single-turn chats "
        f"({lengths['min']:.0f}–{lengths['max']:.0f} tokens, mean {lengths['mean']:.0f}), "
        f"{s['examples_per_step']} examples per step, max length {s['max_length']}, "
        f"assistant-only loss, {s['steps']} steps × {s['repeats']} repeat(s) per run "
        f"(step 1 not timed), {s.get('threads_per_run', m['torch_threads'])} thread(s) per run. "
        f"{m['cpu_model']}, {m['logical_cores']} cores, "
        f"{m['mem_total_gib']:.0f} GiB; torch {v['torch']}, transformers {v['transformers']}, "
        f"peft {v['peft']}, trl {v['trl']}; {m['date_utc'][:10]}; load average "
        f"{report['load_average']['start'][0]} → {report['load_average']['end'][0]}."
    )


def _footer(report: dict[str, Any]) -> list[str]:
    peaks = report["matmul_peak_flops"]
    lines = [
        "",
        f"MFU = (4·N_frozen + 6·N_LoRA) × real tokens/s ÷ measured matmul peak "
        f"(fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s); "
        "an approximation that ignores attention's quadratic term. "
        "CPU-s/step: CPU time of the run's process (all threads) per step; with one thread "
        "per run, waiting for a core on a busy machine does not inflate it. "
        "Ratios are tunesmith ÷ TRL at the same precision.",
    ]
    for kind, paired in report.get("paired_step_ratio_unpacked", {}).items():
        if paired:
            text = ", ".join(f"{k.rsplit('-', 1)[-1]} {v:.2f}" for k, v in paired.items())
            lines.append(
                f"Step {kind} time tunesmith-unpacked ÷ TRL paired step by step (identical "
                f"batches), median: {text}."
            )
    util = {k: v["cpu_utilisation"] for k, v in report["results"].items()}
    lines.append(
        "CPU time ÷ (wall × threads) per run, a rough contention gauge (1.00: the run "
        "always had its cores; with several threads, single-threaded setup lowers it too): "
        + ", ".join(f"{k} {v:.2f}" for k, v in util.items())
        + "."
    )
    for prec, c in report.get("first_step_loss", {}).items():
        same = c.get("trl_same_labels")
        same_txt = f"{same:.4f} ({c['trl_same_labels_rel_diff']:+.2%})" if same else "n/a"
        lines.append(
            f"Step-1 loss, same 8 examples ({prec}): tunesmith {c['tunesmith']:.4f}; TRL "
            f"{c['trl_logged']:.4f} as logged ({c['trl_logged_rel_diff']:+.2%}: TRL also trains "
            f"the newline after `<|im_end|>`), {same_txt} on tunesmith's label set."
        )
    return lines


def render(report: dict[str, Any]) -> str:
    """The Markdown table with one context line above and the MFU / loss notes below."""
    packed_rows = report["settings"]["packed_micro_batch_rows"]
    ratios = report.get("ratios_tunesmith_over_trl", {})
    rows = [
        _row(name, res, ratios.get(name), packed_rows)
        for name, res in sorted(report["results"].items(), key=_order)
    ]
    return "\n".join([_context(report), "", HEADER, *rows, *_footer(report), *_defaults(report)])


def _defaults(report: dict[str, Any]) -> list[str]:
    """The default-against-default line, and which TRL layout was the like-for-like peer."""
    lines = []
    peers = sorted({r["trl"] for r in report.get("ratios_tunesmith_over_trl", {}).values()
                    if isinstance(r, dict) and "trl" in r})  # fmt: skip
    if peers:
        lines.append(
            f"× TRL columns: against the faster TRL layout at each precision ({', '.join(peers)})."
        )
    d = report.get("default_vs_default")
    if d:
        lines.append(
            f"Default against default ({d['tunesmith']} vs {d['trl']}): "
            f"tok/s {_ratio(d.get('assistant_tokens_per_s'))}, "
            f"peak RSS {_ratio(d.get('peak_rss_gib'))}."
        )
    return lines


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else DEFAULT
    print(render(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
