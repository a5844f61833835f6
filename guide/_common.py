"""What every guide script shares: arguments, the model (SmolLM2 or a tiny random one), running
one arm of an experiment in a child process (wall time, peak RSS), demo-task scoring, and
writing the results file, the plot and the page's results block.

A guide script is ``guide/<slug>.py``; its page is ``docs/guide/<slug>.md``; its results file is
``benchmarks/results/guide/<slug>.json``; its plot is ``docs/guide/<slug>.svg``. With ``--tiny``
the script trains a tiny random model built here (seconds) and writes only under a temporary
folder (or ``--out``): the committed results, plot and page are left alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "configs" / "smollm2-135m-instruct"
RESULTS_DIR = ROOT / "benchmarks" / "results" / "guide"
PAGES_DIR = ROOT / "docs" / "guide"
MODEL = "smollm2-135m-instruct"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
DEMO_TEST = ROOT / "data" / "demo" / "test.jsonl"

Row = dict[str, Any]
Series = tuple[str, Sequence[tuple[float, float]]]


@dataclass
class Guide:
    """One experiment being run: where it writes and which model it trains."""

    slug: str
    title: str
    tiny: bool
    work: Path  # run directories and scratch files
    results: Path
    plot: Path
    model: str
    started: float = field(default_factory=time.perf_counter)
    load_start: list[float] = field(default_factory=lambda: _load())

    @property
    def command(self) -> str:
        return f"python guide/{self.slug.replace('-', '_')}.py"

    def recipe(self, name: str) -> str:
        return str(RECIPES / name)

    def pick(self, real: Any, tiny: Any) -> Any:
        """``real`` for the SmolLM2 experiment, ``tiny`` under ``--tiny``."""
        return tiny if self.tiny else real

    def base_overrides(self, arm: str) -> list[str]:
        """Model, output folder and run name of one arm (every recipe gets these)."""
        return [
            f"model.name_or_path={self.model}",
            f"train.output_dir={self.work / 'runs'}",
            f"train.run_name={arm}",
            "train.save_every=null",
        ]


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def start(slug: str, title: str, argv: Sequence[str] | None = None, trains: bool = True) -> Guide:
    """Parse ``--tiny`` / ``--out`` and set up the experiment (cwd: the repository root);
    ``trains=False``: a page that reads results only (no tiny model is built)."""
    parser = argparse.ArgumentParser(description=title)
    parser.add_argument("--tiny", action="store_true", help="a tiny random model, seconds")
    parser.add_argument("--out", help="results file (default: the committed one; tiny: a temp)")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    if args.tiny and trains:
        import torch

        torch.set_num_threads(1)  # tiny tensors: threads only contend on a shared machine
    if args.tiny:
        scratch = Path(args.out).resolve().parent if args.out else None
        work = Path(tempfile.mkdtemp(prefix=f"guide-{slug}-", dir=scratch))
        results = Path(args.out) if args.out else work / f"{slug}.json"
        model = str(make_tiny_model(work / "tiny-model")) if trains else MODEL
    else:
        work = ROOT / "runs" / "guide" / slug
        shutil.rmtree(work / "runs", ignore_errors=True)  # this script's own earlier run dirs
        results = Path(args.out) if args.out else RESULTS_DIR / f"{slug}.json"
        model = MODEL
    work.mkdir(parents=True, exist_ok=True)
    plot = results.with_suffix(".svg") if args.tiny or args.out else PAGES_DIR / f"{slug}.svg"
    return Guide(slug, title, args.tiny, work, results, plot, model)


# ----------------------------------------------------------------------------- the tiny model


def make_tiny_model(out: Path) -> Path:
    """A random 2-layer Llama (hidden 64: bitsandbytes' NF4 needs multiples of 64) with a small
    byte-level BPE tokenizer and SmolLM2's ChatML template, saved as an HF model directory."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    if (out / "config.json").is_file():
        return out
    specials = ["<|im_start|>", "<|im_end|>", "<s>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    corpus = DEMO_TEST.read_text(encoding="utf-8").splitlines()
    backend.train_from_iterator(corpus * 2, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>",
                                  eos_token="<|im_end|>", pad_token="<|im_end|>",
                                  additional_special_tokens=["<|im_start|>"])  # fmt: skip
    tok.chat_template = (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
        "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, head_dim=16,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                      tie_word_embeddings=True)  # fmt: skip
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


# ----------------------------------------------------------------------------- running arms


def _measured(fn: Callable[..., Row], args: tuple[Any, ...]) -> Row:
    start = time.perf_counter()
    row = fn(*args)
    row.setdefault("wall_seconds", round(time.perf_counter() - start, 1))
    row.setdefault("peak_rss_mib", peak_rss_mib())
    return row


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def arm(g: Guide, fn: Callable[..., Row], *args: Any) -> Row:
    """``fn(*args)`` with its wall time and peak RSS. On SmolLM2 each arm is its own child
    process, so each peak RSS is its own; under ``--tiny`` it runs in this process (the peak is
    the process's, and only the keys matter)."""
    print(f"[guide] {g.slug}: {getattr(fn, '__name__', fn)}{args[1:2]}", flush=True)
    if g.tiny:
        return _measured(fn, args)
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        return pool.submit(_measured, fn, args).result()


def train(config: str, overrides: list[str]) -> Row:
    """Train one recipe through the Python API; the numbers its run directory holds. The peak
    RSS is read right after training (before any scoring loads more)."""
    import tunesmith as ts

    run = ts.train(config, overrides, skip_preflight=True)
    peak = peak_rss_mib()
    rows = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r.get("split") == "train"]
    env = json.loads((run.path / "env.json").read_text())
    steps = [r["step_seconds"] for r in train_rows if "step_seconds" in r]
    tps = [r["tokens_per_s"] for r in train_rows if "tokens_per_s" in r]
    return {
        "run_dir": str(run.path.resolve().relative_to(ROOT))
        if run.path.resolve().is_relative_to(ROOT)
        else str(run.path),
        "steps": run.steps,
        "val_loss": run.val_loss,
        "trainable_params": env.get("trainable_params"),
        "base_weight_mib": round(env["base_weight_bytes"] / 2**20, 1)
        if env.get("base_weight_bytes")
        else None,
        "median_step_seconds": statistics.median(steps) if steps else None,
        "tokens_per_s": statistics.median(tps) if tps else None,
        "peak_rss_mib": peak,
        "loss_curve": [(r["step"], r["loss"]) for r in train_rows if "loss" in r],
    }


def demo_prompts(n: int, shots: int = 0) -> tuple[list[Any], list[str]]:
    """The first ``n`` held-out demo examples as conversations (``shots`` worked examples from
    the training file first, as earlier turns) and their reference replies."""
    from tunesmith.data.formats import load_examples

    test, _ = load_examples(str(DEMO_TEST))
    train, _ = load_examples(str(ROOT / "data" / "demo" / "train.jsonl"))
    prefix = [m for ex in train[:shots] for m in ex.messages]
    convs = [[*prefix, *ex.messages[:-1]] for ex in test[:n]]
    return convs, [ex.messages[-1].content for ex in test[:n]]


def demo_score(model_dir: str, n: int, shots: int = 0, max_new_tokens: int = 48) -> float:
    """Exact-JSON accuracy (the demo's metric) of greedy replies on ``n`` held-out examples."""
    from tunesmith.examples.demo_task import score_reply
    from tunesmith.generation import SamplingParams, chat_replies
    from tunesmith.models.load import load_for_inference

    model, tok = load_for_inference(model_dir)
    convs, refs = demo_prompts(n, shots)
    params = SamplingParams(max_new_tokens=max_new_tokens)
    replies = chat_replies(model, tok, convs, params, batch_size=10)
    return sum(score_reply(r, ref) for r, ref in zip(replies, refs, strict=True)) / len(refs)


def train_and_score(config: str, overrides: list[str], n: int, max_new_tokens: int) -> Row:
    """:func:`train`, then the demo score of the run on ``n`` held-out examples."""
    row = train(config, overrides)
    row["demo_score"] = demo_score(row["run_dir"], n, max_new_tokens=max_new_tokens)
    return row


# ----------------------------------------------------------------------------- writing results


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render_block(results: Row) -> str:
    """The page's results block, made only from the results file."""
    cols = results["columns"]
    verb = "Tabulated" if results.get("source") else "Measured"
    lines = [
        f"{verb} by `{results['command']}` on {results['generated_utc'][:10]} "
        f"({results['wall_seconds'] / 60:.1f} min, load average "
        f"{results['load_average_start'][0]} at start, {results['load_average_end'][0]} at end; "
        "2 CPU cores shared with other work, so wall times are indicative). "
        f"Results file: `benchmarks/results/guide/{results['slug']}.json`.",
        "",
        "| " + " | ".join(c["label"] for c in cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
    ]
    lines += ["| " + " | ".join(_cell(r.get(c["key"])) for c in cols) + " |"
              for r in results["rows"]]  # fmt: skip
    lines += ["", f"![{results['title']}]({results['slug']}.svg)"]
    lines += [f"\n{n}" for n in results.get("notes", [])]
    return "\n".join(lines)


def rewrite_page(page: Path, block: str) -> None:
    """Replace the text between the page's results markers with ``block``."""
    text = page.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"{page}: no {BEGIN} ... {END} block")
    page.write_text(pattern.sub(lambda _: f"{BEGIN}\n{block}\n{END}", text), encoding="utf-8")


def finish(
    g: Guide,
    columns: list[tuple[str, str]],
    rows: list[Row],
    series: list[Series],
    *,
    x_label: str,
    chart_title: str,
    notes: list[str] | None = None,
    extra: Row | None = None,
) -> Row:
    """Write the results file and the plot; on SmolLM2, rewrite the page's results block."""
    from tunesmith.report.charts import line_chart

    results = {
        "slug": g.slug,
        "title": g.title,
        "command": g.command + (" --tiny" if g.tiny else ""),
        "tiny": g.tiny,
        "model": g.model if not g.tiny else "tiny random Llama (built in guide/_common.py)",
        "generated_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(time.perf_counter() - g.started, 1),
        "load_average_start": g.load_start,
        "load_average_end": _load(),
        "cpu_count": os.cpu_count(),
        "columns": [{"key": k, "label": label} for k, label in columns],
        "rows": rows,
        "series": {name: [list(p) for p in pts] for name, pts in series},
        "notes": notes or [],
        **(extra or {}),
    }
    g.results.parent.mkdir(parents=True, exist_ok=True)
    g.results.write_text(json.dumps(results, indent=1) + "\n")
    svg = line_chart(series, title=chart_title, chart_id=g.slug, x_label=x_label, width=560)
    g.plot.write_text(svg + "\n")
    if not g.tiny and g.results == RESULTS_DIR / f"{g.slug}.json":
        rewrite_page(PAGES_DIR / f"{g.slug}.md", render_block(results))
    print(f"[guide] {g.slug}: {g.results} ({results['wall_seconds']:.0f} s)", flush=True)
    return results


def main_guard(main: Callable[[list[str] | None], int]) -> None:
    """``sys.exit(main())`` for a script run directly."""
    sys.exit(main(None))
