"""Smaller and deployable: the demo's tuned SmolLM2 distilled into a depth-pruned student, GGUF.

The pipeline (issue 16, item 5), every step a tunesmith command or its function:

1. teacher: the demo run (``configs/smollm2-135m-instruct/sft_lora_demo.yaml``, what ``make demo``
   trains), or an existing run dir given by ``--teacher``; its LoRA is merged (``tunesmith merge``);
2. student: the merged teacher depth-pruned (``tunesmith prune --drop-layers N``, ShortGPT scores
   on the first ``--calibration-texts`` demo training texts);
3. healing: ``method: distill`` from the teacher on the demo data
   (``configs/smollm2-135m-instruct/distill_pruned_student.yaml``);
4. ``tunesmith export --format gguf --quant q8_0`` of the healed student (verified).

One table, each row measured here: held-out score (the demo's strict exact-JSON scorer on
``data/demo/test.jsonl``, greedy, as ``make demo`` prints), parameters, file size and greedy
tokens/s (batch 1, 32 new tokens per prompt, EOS ignored) for the teacher (merged), the pruned
student before healing, the healed student, the GGUF q8_0 student under transformers' GGUF loader
(dequantized to float32) and, where ``llama-cpp-python`` is installed (``make llama-cpp``), the
same file under llama.cpp. Results go to ``benchmarks/results/small_models.json``. The run the
README quotes (20 minutes on a shared 2-core machine; one thread: OpenMP threads that
spin-wait on an oversubscribed CPU made the default two-thread run far slower there)::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/small_models.py \\
        --teacher runs/demo-json-lora-TIMESTAMP --drop-layers 6 --heal-steps 12 \\
        --calibration-texts 64 --examples 30 --set train.eval_every=6

(``--teacher`` left out: the demo recipe trains the teacher first.) A tiny-model run (seconds)::

    python benchmarks/small_models.py --model DIR --drop-layers 1 --teacher-steps 2 \\
        --heal-steps 2 --examples 4 --max-length 256 --out /tmp/small.json

``--table FILE`` prints the Markdown table of an earlier results file (the README's).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
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
from qat_vs_ptq import tokens_per_second  # noqa: E402

RECIPES = ROOT / "configs" / "smollm2-135m-instruct"
TEACHER_RECIPE = RECIPES / "sft_lora_demo.yaml"
HEAL_RECIPE = RECIPES / "distill_pruned_student.yaml"
TRAIN_FILE = ROOT / "data" / "demo" / "train.jsonl"
TEST_FILE = ROOT / "data" / "demo" / "test.jsonl"
RESULTS = HERE / "results" / "small_models.json"
SPEED_PROMPTS, SPEED_TOKENS = 4, 32


def _train(
    recipe: Path, out: Path, name: str, overrides: list[str], max_length: int | None
) -> Path:
    from tunesmith.cli import main

    if max_length is not None:
        overrides = [f"data.max_length={max_length}", *overrides]
    args = [
        "train",
        str(recipe),
        f"data.train={TRAIN_FILE}",
        f"train.output_dir={out}",
        f"train.run_name={name}",
        "train.save_every=100000",
        *overrides,
    ]
    if main(args) != 0:
        raise SystemExit(f"training {name} failed")
    return out / name


def merged_teacher(run: Path, out: Path) -> Path:
    """The teacher's weights with its LoRA folded in (``tunesmith merge``); a full run's final/."""
    from tunesmith.merge.common import is_adapter, weights_dir
    from tunesmith.merge.lora import merge_run

    if not is_adapter(weights_dir(run)):
        return weights_dir(run)
    merge_run(run, out, device="cpu")
    return out


def _bytes(path: Path) -> int:
    files = [path] if path.is_file() else list(path.glob("*.safetensors"))
    return sum(f.stat().st_size for f in files)


def _params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())  # tied embeddings counted once


def hf_row(label: str, model: Any, tokenizer: Any, files: Path, examples: list[Any]) -> dict:
    """Score, size and greedy speed of a transformers model."""
    from tunesmith.examples.demo import score

    held_out, _ = score(model, tokenizer, examples)
    speed = tokens_per_second(model, tokenizer, examples[:SPEED_PROMPTS], SPEED_TOKENS)
    return {
        "model": label,
        "held_out_exact_json": held_out,
        "parameters": _params(model),
        "file_bytes": _bytes(files),
        "greedy_tokens_per_s": speed,
    }


def llama_cpp_row(gguf: Path, tokenizer: Any, parameters: int, examples: list[Any]) -> dict:
    """The same measurements with llama.cpp (llama-cpp-python) running the GGUF file."""
    from llama_cpp import Llama

    from tunesmith.data.templates import encode_prompt
    from tunesmith.examples.demo_task import score_reply
    from tunesmith.generation import eos_ids

    llm = Llama(model_path=str(gguf), n_ctx=512, n_threads=torch.get_num_threads(), verbose=False)
    stop = set(eos_ids(tokenizer))

    def greedy(ids: list[int], new: int, until_eos: bool) -> list[int]:
        out: list[int] = []
        # greedy: top-1 and no repetition penalty (llama-cpp-python's default is 1.1)
        for token in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
            if until_eos and token in stop:
                break
            out.append(token)
            if len(out) == new:
                break
        return out

    prompts = [encode_prompt(list(ex.messages[:-1]), tokenizer, "tokenizer") for ex in examples]
    hits = [
        score_reply(
            tokenizer.decode(greedy(p, 48, True), skip_special_tokens=True).strip(),
            ex.messages[-1].content,
        )
        for p, ex in zip(prompts, examples, strict=True)
    ]
    total, seconds = 0, 0.0
    for p in prompts[:SPEED_PROMPTS]:
        t0 = time.perf_counter()
        total += len(greedy(p, SPEED_TOKENS, False))
        seconds += time.perf_counter() - t0
    llm.close()
    return {
        "model": "healed student, GGUF q8_0 (llama.cpp)",
        "held_out_exact_json": sum(hits) / len(hits),
        "parameters": parameters,
        "file_bytes": _bytes(gguf),
        "greedy_tokens_per_s": total / max(seconds, 1e-9),
    }


def build(args: argparse.Namespace, work: Path, walls: dict[str, float]) -> dict[str, Path]:
    """Teacher -> merged -> pruned -> healed -> GGUF q8_0; the paths of each."""
    from tunesmith.compress.gguf_export import export_gguf
    from tunesmith.compress.prune_run import prune

    def timed(name: str, t0: float) -> None:
        walls[f"{name}_seconds"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    teacher = args.teacher or _train(
        TEACHER_RECIPE,
        work,
        "teacher",
        [f"model.name_or_path={args.model}", f"train.max_steps={args.teacher_steps}"],
        args.max_length,
    )
    merged = merged_teacher(Path(teacher), work / "teacher-merged")
    timed("teacher", t0)
    t0 = time.perf_counter()
    pruned, calibration = work / "pruned", work / "calibration.jsonl"
    lines = TRAIN_FILE.read_text().splitlines(keepends=True)[: args.calibration_texts]
    calibration.write_text("".join(lines))  # every 4th held out for perplexity
    prune(str(merged), args.drop_layers, pruned, calibration, device="cpu")
    timed("prune", t0)
    t0 = time.perf_counter()
    healed = _train(
        HEAL_RECIPE,
        work,
        "healed",
        [
            f"model.name_or_path={pruned}",
            f"distill.teacher={teacher}",
            f"train.max_steps={args.heal_steps}",
            *args.set,
        ],
        args.max_length,
    )
    timed("heal", t0)
    t0 = time.perf_counter()
    export = export_gguf(healed, "q8_0", work / "gguf", device="cpu")
    timed("export", t0)
    return {
        "teacher": Path(teacher),
        "merged": merged,
        "pruned": pruned,
        "healed": healed / "final",
        "gguf": Path(export["output"]),
    }


def measure(paths: dict[str, Path], examples: list[Any], llama_cpp: bool) -> list[dict]:
    from transformers import AutoModelForCausalLM

    from tunesmith.models.load import load_tokenizer

    def load(path: Path, **kw: Any) -> Any:
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, **kw).eval()

    tokenizer = load_tokenizer(paths["healed"])
    rows = []
    for label, key in (
        ("teacher (demo LoRA, merged)", "merged"),
        ("pruned student, before healing", "pruned"),
        ("healed student (distilled)", "healed"),
    ):
        rows.append(
            hf_row(label, load(paths[key]), load_tokenizer(paths[key]), paths[key], examples)
        )
        print(json.dumps(rows[-1]), flush=True)
    gguf = paths["gguf"]
    rows.append(
        hf_row(
            "healed student, GGUF q8_0 (transformers, dequantized)",
            load(gguf.parent, gguf_file=gguf.name),
            tokenizer,
            gguf,
            examples,
        )
    )
    print(json.dumps(rows[-1]), flush=True)
    if llama_cpp:
        rows.append(llama_cpp_row(gguf, tokenizer, rows[-1]["parameters"], examples))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown_table(result: dict[str, Any]) -> str:
    lines = [
        "| Model | Held-out exact JSON | Parameters | File size | Greedy tokens/s |",
        "|---|--:|--:|--:|--:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['model']} | {r['held_out_exact_json']:.1%} | {r['parameters'] / 1e6:.1f} M "
            f"| {r['file_bytes'] / 2**20:.0f} MiB | {r['greedy_tokens_per_s']:.1f} |"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct", help="the teacher's base model")
    p.add_argument("--teacher", help="an existing demo run dir (skips training the teacher)")
    p.add_argument("--teacher-steps", type=int, default=60)
    p.add_argument("--drop-layers", type=int, default=6)
    p.add_argument(
        "--calibration-texts", type=int, default=128, help="demo training texts for prune"
    )
    p.add_argument("--heal-steps", type=int, default=12)
    p.add_argument("--examples", type=int, default=60, help="held-out examples scored")
    p.add_argument("--max-length", type=int, help="data.max_length of both trainings")
    p.add_argument("--no-llama-cpp", action="store_true", help="skip the llama.cpp row")
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="overrides of the healing (distill) recipe",
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--table", type=Path, help="print the table of this results file and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.table is not None:
        print(markdown_table(json.loads(args.table.read_text())))
        return 0
    from tunesmith.data.formats import load_examples

    start, load_start = time.perf_counter(), load_average()
    examples = load_examples(TEST_FILE)[0][: args.examples]
    llama_cpp = not args.no_llama_cpp and importlib.util.find_spec("llama_cpp") is not None
    walls: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="small-models-") as tmp:
        paths = build(args, Path(tmp), walls)
        t0 = time.perf_counter()
        rows = measure(paths, examples, llama_cpp)
        walls["measure_seconds"] = round(time.perf_counter() - t0, 1)
        prune_report = json.loads((paths["pruned"] / "prune_report.json").read_text())
    walls["total_seconds"] = round(time.perf_counter() - start, 1)
    result = {
        "task": "demo: profile extraction as one line of JSON (strict exact match, greedy)",
        "teacher": str(args.teacher or f"trained here: {TEACHER_RECIPE.relative_to(ROOT)}"),
        "teacher_steps": None if args.teacher else args.teacher_steps,
        "model": args.model,
        "drop_layers": args.drop_layers,
        "layers": [prune_report["layers_before"], prune_report["layers_after"]],
        "dropped": prune_report["dropped"],
        "calibration_texts": args.calibration_texts,
        "prune_perplexity_before_after": [
            prune_report["before"]["perplexity"],
            prune_report["after"]["perplexity"],
        ],
        "heal_recipe": str(HEAL_RECIPE.relative_to(ROOT)),
        "heal_steps": args.heal_steps,
        "heal_overrides": args.set,
        "held_out_examples": len(examples),
        "speed": f"greedy, batch 1, {SPEED_TOKENS} new tokens x {SPEED_PROMPTS} prompts, CPU",
        "rows": rows,
        "wall": walls,
        "load_average_start_end": [load_start, load_average()],
        "timing_note": "tokens/s measured on a shared machine (see load averages)",
        "niceness": os.nice(0),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "machine": machine_info(),
        "command": "python benchmarks/small_models.py " + " ".join(sys.argv[1:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table(result))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
