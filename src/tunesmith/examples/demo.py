"""The quickstart (`make demo`): score the base model, LoRA-fine-tune it, score it again.

Task: reply to a profile-extraction request with one line of JSON in a fixed schema (see
:mod:`tunesmith.examples.demo_task`). Both scores are measured on the held-out
``data/demo/test.jsonl``
with greedy decoding; nothing is hard-coded.

    python -m tunesmith.examples.demo [key=value ...]   # recipe overrides: train.max_steps=30
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from tunesmith.cli import recipes_dir
from tunesmith.config import SFTConfig, load_config
from tunesmith.data.formats import load_examples
from tunesmith.data.records import Example
from tunesmith.examples.demo_task import score_reply
from tunesmith.generation import SamplingParams, chat_replies
from tunesmith.methods import sft
from tunesmith.models.load import load_for_inference

RECIPE = "smollm2-135m-instruct/sft_lora_demo.yaml"
TEST_FILE = "data/demo/test.jsonl"


def score(model: Any, tokenizer: Any, examples: list[Example]) -> tuple[float, list[str]]:
    """Fraction of examples whose greedy reply exactly matches the reference (strict JSON)."""
    prompts = [list(ex.messages[:-1]) for ex in examples]
    replies = chat_replies(
        model, tokenizer, prompts, SamplingParams(max_new_tokens=48), batch_size=20
    )
    hits = [
        score_reply(r, ex.messages[-1].content) for r, ex in zip(replies, examples, strict=True)
    ]
    return sum(hits) / len(hits), replies


def main(argv: list[str] | None = None) -> int:
    start = time.perf_counter()
    overrides = list(sys.argv[1:] if argv is None else argv)
    run_name = f"demo-json-lora-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg = load_config(recipes_dir() / RECIPE, [f"train.run_name={run_name}", *overrides])
    assert isinstance(cfg, SFTConfig)
    test, _ = load_examples(TEST_FILE)

    print(f"[demo] scoring the base model on {len(test)} held-out examples", flush=True)
    base_model, base_tok = load_for_inference(cfg.model.name_or_path)
    base_score, base_replies = score(base_model, base_tok, test)
    del base_model
    print(f"[demo] base model: {base_score:.1%} exact JSON", flush=True)

    result = sft.run(cfg)
    tuned_model, tuned_tok = load_for_inference(str(result.run_dir))
    tuned_score, tuned_replies = score(tuned_model, tuned_tok, test)
    wall = time.perf_counter() - start
    summary = {
        "task": "profile extraction as one line of JSON (strict exact match)",
        "held_out_examples": len(test),
        "base_score": base_score,
        "finetuned_score": tuned_score,
        "train_steps": result.steps,
        "final_val_loss": result.val_loss,
        "run_dir": str(result.run_dir),
        "wall_seconds": round(wall, 1),
        "samples": [
            {"prompt": ex.messages[0].content, "base": b, "finetuned": t}
            for ex, b, t in list(zip(test, base_replies, tuned_replies, strict=True))[:3]
        ],
    }
    Path(result.run_dir, "demo_scores.json").write_text(json.dumps(summary, indent=2))
    for s in summary["samples"]:
        print(
            f"\n  prompt:     {s['prompt']!r}\n  base:       {s['base']!r}\n"
            f"  fine-tuned: {s['finetuned']!r}"
        )
    print(
        f"\n[demo] held-out exact-JSON score: base {base_score:.1%} -> fine-tuned "
        f"{tuned_score:.1%}  ({len(test)} examples)"
    )
    print(f"[demo] run directory: {result.run_dir}   (wall time {wall / 60:.1f} min)")
    print(
        f"[demo] try it: tunesmith generate {result.run_dir} --prompt "
        '"Extract this person\'s profile as JSON.\\nAnna Berg, 29, lives in Oslo."'
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
