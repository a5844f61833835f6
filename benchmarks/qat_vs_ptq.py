"""Post-training quantization (PTQ) against quantization-aware training (QAT), same bits.

On the demo task (``data/demo/train.jsonl``, strict exact-JSON score on ``data/demo/test.jsonl``)
two full fine-tunes run with the same recipe, seed and steps
(``configs/smollm2-135m-instruct/sft_full.yaml``):

- ``float``: plain SFT; its ``final/`` is the float reference;
- ``ptq``: the float run's ``final/`` quantized after training with the torchao config QAT
  simulates (int8 dynamic activations, int4 per-32 group or int8 per-channel weights), via
  ``TorchAoConfig``;
- ``qat``: SFT with ``train.qat`` (fake quantization during training), then its
  ``final/quantized/``.

For each: held-out score (greedy), bytes of the weight files, and greedy generation speed
(new tokens per second, batch 1, 32 new tokens per prompt). Results go to
``benchmarks/results/qat_vs_ptq.json``. The real numbers (a quiet machine)::

    python benchmarks/qat_vs_ptq.py --steps 150 --weights int4 --examples 100

The shortened run docs/compress.md quotes (a shared 2-core machine, 28 minutes)::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/qat_vs_ptq.py --steps 12 --weights int4 \\
        --examples 30 --set data.max_length=128 train.micro_batch_size=8 train.grad_accum=1 \\
        optim.lr=1e-4

A smoke run on a tiny model (seconds)::

    python benchmarks/qat_vs_ptq.py --model DIR --steps 2 --examples 4 --out /tmp/q.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _machine import load_average, machine_info  # noqa: E402

RECIPE = ROOT / "configs" / "smollm2-135m-instruct" / "sft_full.yaml"
TEST_FILE = ROOT / "data" / "demo" / "test.jsonl"
RESULTS = HERE / "results" / "qat_vs_ptq.json"


def train_run(
    model: str, out: Path, name: str, steps: int, qat: str | None, extra: list[str]
) -> Path:
    from tunesmith.cli import main

    args = [
        "train",
        str(RECIPE),
        f"model.name_or_path={model}",
        f"data.train={ROOT / 'data' / 'demo' / 'train.jsonl'}",
        f"train.output_dir={out}",
        f"train.run_name={name}",
        f"train.max_steps={steps}",
        "train.save_every=100000",
        *extra,
    ]
    if qat is not None:
        args.append(f"train.qat.weights={qat}")
    if main(args) != 0:
        raise SystemExit(f"training {name} failed")
    return out / name


def weight_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


@torch.no_grad()
def tokens_per_second(model: Any, tokenizer: Any, examples: list[Any], new: int = 32) -> float:
    """Greedy decoding speed, batch 1, ``new`` tokens per prompt (EOS ignored)."""
    from tunesmith.data.templates import encode_prompt

    total, seconds = 0, 0.0
    for ex in examples:
        ids = torch.tensor([encode_prompt(list(ex.messages[:-1]), tokenizer, "tokenizer")])
        t0 = time.perf_counter()
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        seconds += time.perf_counter() - t0
        total += out.shape[1] - ids.shape[1]
    return total / max(seconds, 1e-9)


def measure(label: str, model: Any, tokenizer: Any, files: Path, examples: list[Any]) -> dict:
    from tunesmith.examples.demo import score

    t0 = time.perf_counter()
    held_out, _ = score(model, tokenizer, examples)
    row = {
        "variant": label,
        "held_out_exact_json": held_out,
        "weight_bytes": weight_bytes(files),
        "greedy_tokens_per_s": tokens_per_second(model, tokenizer, examples[:4]),
        "eval_seconds": time.perf_counter() - t0,
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--weights", choices=["int4", "int8"], default="int4")
    p.add_argument("--examples", type=int, default=100, help="held-out examples scored")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="recipe overrides applied to both runs alike (e.g. data.max_length=128)",
    )
    args = p.parse_args()
    load_start = load_average()

    from transformers import AutoModelForCausalLM, TorchAoConfig

    from tunesmith.compress.qat import base_config
    from tunesmith.config.qat import QATSection
    from tunesmith.data.formats import load_examples
    from tunesmith.models.load import load_tokenizer

    examples = load_examples(TEST_FILE)[0][: args.examples]
    qconfig = TorchAoConfig(
        base_config(QATSection(weights=args.weights)), modules_to_not_convert=["lm_head"]
    )
    rows, walls = [], {}
    with tempfile.TemporaryDirectory(prefix="qat-vs-ptq-") as tmp:
        for name, qat in (("float", None), ("qat", args.weights)):
            t0 = time.perf_counter()
            train_run(args.model, Path(tmp), name, args.steps, qat, args.set)
            walls[f"train_{name}_seconds"] = round(time.perf_counter() - t0, 1)
        final = Path(tmp) / "float" / "final"
        tokenizer = load_tokenizer(final)
        plain = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32).eval()
        rows.append(measure("float", plain, tokenizer, final, examples))
        ptq = AutoModelForCausalLM.from_pretrained(final, quantization_config=qconfig).eval()
        with tempfile.TemporaryDirectory(prefix="ptq-") as ptq_dir:
            ptq.save_pretrained(ptq_dir)  # the bytes a user would ship
            rows.append(measure(f"ptq-{args.weights}", ptq, tokenizer, Path(ptq_dir), examples))
        quantized = Path(tmp) / "qat" / "final" / "quantized"
        qat_model = AutoModelForCausalLM.from_pretrained(quantized).eval()
        rows.append(measure(f"qat-{args.weights}", qat_model, tokenizer, quantized, examples))
    result = {
        "task": "demo: profile extraction as one line of JSON (strict exact match, greedy)",
        "model": args.model,
        "steps": args.steps,
        "recipe": str(RECIPE.relative_to(ROOT)),
        "overrides": args.set,
        "weights": args.weights,
        "activations": "int8 dynamic per token",
        "held_out_examples": len(examples),
        "rows": rows,
        "wall": walls,
        "load_average_start_end": [load_start, load_average()],
        "timing_note": "tokens/s measured on a shared 2-core machine (see load averages)",
        "machine": machine_info(),
        "command": "python benchmarks/qat_vs_ptq.py " + " ".join(sys.argv[1:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
