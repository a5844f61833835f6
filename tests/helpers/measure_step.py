"""Measure the peak memory a few real training steps add on top of the loaded model.

Run as a script in a fresh process (``python -m tests.helpers.measure_step MODEL_DIR ...``) so the
measurement sees only this model: CPU memory is the process's peak RSS (VmHWM, reset through
``/proc/self/clear_refs`` after loading and reading every weight once), CUDA memory is
``torch.cuda.max_memory_allocated``. Prints one JSON line
``{"baseline": bytes, "peak": bytes, "increment": bytes}``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def measure(
    model: Path, method: str, seq: int, batch: int, checkpointing: bool, dropout: float = 0.0
) -> int:
    """Peak memory that 2 training steps (the second with optimizer state) add above the loaded
    model, in a fresh process. A fixed malloc mmap threshold makes freed tensors leave RSS, so
    RSS follows the live tensors. ``dropout``: LoRA dropout."""
    cmd = [sys.executable, "-m", "tests.helpers.measure_step", str(model), "--method", method]
    cmd += ["--seq", str(seq), "--batch", str(batch), "--dropout", str(dropout)]
    cmd += ["--checkpointing"] if checkpointing else []
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return int(json.loads(done.stdout.strip().splitlines()[-1])["increment"])


def _status_bytes(key: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    assert match, key
    return int(match.group(1)) * 1024


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def _model(args: argparse.Namespace, device: torch.device) -> torch.nn.Module:
    from tunesmith.models.load import load_causal_lm

    model = load_causal_lm(args.model, dtype=torch.float32, device=device)
    if args.checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if args.method == "lora":
        from tunesmith.config import LoraSection
        from tunesmith.models.adapters import attach_lora

        model = attach_lora(model, LoraSection(r=args.rank, dropout=args.dropout))
    model.train()
    return model


def _page_in(model: torch.nn.Module) -> None:
    """Read every parameter and buffer once, so the loaded model is resident before the baseline.

    On CPU, ``from_pretrained`` maps a safetensors file whose dtype is the requested one into
    memory (a private file mapping) instead of copying it: the weights only count in RSS once
    touched. Without this the first step's forward pages the whole model in (SmolLM2-135M in
    fp32: 538 MB, each decoder layer's weights at its first matmul) and the measurement charges
    the weights, which the planner counts as resident, to the step.
    """
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            tensor.sum()


def _warm_up(args: argparse.Namespace, device: torch.device) -> None:
    """One step of a throw-away copy of the model on 8 tokens: pages in the kernels' code and
    starts the thread pools, so the measurement sees tensors, not libraries."""
    from tunesmith.config import OptimSection
    from tunesmith.engine.forward import forward_loss
    from tunesmith.engine.optim import build_optimizer

    model = _model(args, device)
    optimizer = build_optimizer(model, OptimSection(lr=1e-4))
    shape = (args.batch, args.seq) if args.warm_full else (1, 8)
    ids = torch.randint(0, model.config.vocab_size, shape, device=device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    loss, _n = forward_loss(model, batch)
    loss.backward()
    optimizer.step()
    del model, optimizer, loss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--method", choices=["full", "lora"], default="full")
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--dropout", type=float, default=0.0, help="LoRA dropout")
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warm-full", action="store_true", help="warm up on the full batch")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    from tunesmith.config import OptimSection
    from tunesmith.engine.forward import forward_loss
    from tunesmith.engine.optim import build_optimizer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    _warm_up(args, device)
    model = _model(args, device)
    _page_in(model)
    optimizer = build_optimizer(model, OptimSection(lr=1e-4))
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (args.batch, args.seq), device=device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    if device.type == "cuda":
        baseline = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        baseline = _status_bytes("VmRSS")
        _reset_peak()
    for _ in range(args.steps):
        loss, _n = forward_loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else _status_bytes("VmHWM")
    print(json.dumps({"baseline": baseline, "peak": peak, "increment": peak - baseline}))


if __name__ == "__main__":
    main()
