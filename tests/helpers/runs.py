"""Helpers for tests that train through the real CLI on a tiny model."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tunesmith.cli import main


def write_chat_data(path: Path, n: int = 48, seed: int = 0) -> Path:
    """A small learnable chat task: add two numbers, reply in a fixed sentence."""
    rng = random.Random(seed)
    with path.open("w") as fh:
        for _ in range(n):
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            row = {
                "messages": [
                    {"role": "user", "content": f"{a} plus {b}?"},
                    {"role": "assistant", "content": f"It is {a + b}."},
                ]
            }
            fh.write(json.dumps(row) + "\n")
    return path


def write_config(
    tmp_path: Path, model_dir: Path, data_file: Path, **sections: dict[str, Any]
) -> Path:
    cfg: dict[str, Any] = {
        "model": {"name_or_path": str(model_dir)},
        "data": {"train": str(data_file), "max_length": 96, "val_fraction": 0.125},
        "train": {
            "output_dir": str(tmp_path / "runs"),
            "run_name": "run",
            "max_steps": 4,
            "micro_batch_size": 4,
            "seed": 3,
            "precision": "fp32",  # the invariants compare to 1e-5..1e-6
        },
        "optim": {"lr": 5e-3},
        "lora": {"dropout": 0.0},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    path = tmp_path / "cfg.yaml"
    path.write_text("# tunesmith train cfg.yaml\n" + yaml.safe_dump(cfg))
    return path


def train(config: Path, *overrides: str) -> Path:
    assert main(["train", str(config), *overrides]) == 0
    run = yaml.safe_load(config.read_text())["train"]
    name = next(
        (o.split("=", 1)[1] for o in overrides if o.startswith("train.run_name=")), run["run_name"]
    )
    return Path(run["output_dir"]) / name


def step_losses(run_dir: Path) -> list[float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r.get("split") == "train"]


REPO = Path(__file__).resolve().parents[2]


def train_subprocess(
    config: Path, *args: str, nproc: int = 1, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``tunesmith train`` in a process of its own (so it can be killed), or under
    ``torchrun`` with ``nproc`` processes; one thread per process either way."""
    launch = ["-m", "tunesmith"]
    # One thread, fixed: a run and its resumed half must reduce in the same order, and MKL's
    # dynamic threading may pick fewer threads on a loaded machine (runs then differ by ~1e-6).
    extra_env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MKL_DYNAMIC": "FALSE"}
    if nproc > 1:
        launch = [
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            *launch,
        ]
    cmd = [sys.executable, *launch, "train", str(config), *args]
    return subprocess.run(
        cmd,
        cwd=REPO,
        env={**os.environ, **extra_env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def train_two_nodes(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """``tunesmith train`` as a 2-node job on this machine: two ``torchrun`` launches (one
    process each, ``--node_rank 0`` and ``1``) meeting at a c10d rendezvous on localhost, the
    way a multi-node job is started on real nodes."""
    port = free_port()
    procs = []
    for node in (0, 1):
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes=2",
            "--nproc_per_node=1",
            f"--node_rank={node}",
            "--rdzv_backend=c10d",
            f"--rdzv_endpoint=127.0.0.1:{port}",
            "--rdzv_id=tunesmith-test",
            "--max_restarts=0",
            "-m",
            "tunesmith",
            "train",
            str(config),
            *args,
        ]
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=REPO,
                env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done
