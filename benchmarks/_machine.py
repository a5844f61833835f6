"""What the benchmark ran on: CPU, memory, library versions, load, and a measured matmul peak."""

from __future__ import annotations

import datetime as dt
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "tunesmith")


def _cpuinfo_field(name: str) -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (the machine may be shared)."""
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, bf16 support, library versions and the date."""
    import torch

    flags = (_cpuinfo_field("flags") or "").split()
    return {
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_model": _cpuinfo_field("model name") or platform.processor(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_bf16": {f: f in flags for f in ("avx512_bf16", "amx_bf16", "avx512f")},
        "mem_total_gib": _mem_total_gib(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {p: _version(p) for p in PACKAGES},
        "cuda": torch.cuda.is_available(),
    }


def matmul_peak(dtype_name: str, size: int = 2048, seconds: float = 3.0) -> dict[str, float]:
    """The best FLOP/s of a square ``size`` x ``size`` ``torch.matmul`` in ``dtype_name``
    (``float32`` or ``bfloat16``) over ``seconds`` of repeats, after a warm-up: the denominator
    of MFU. Uses torch's default thread count, as the training runs do."""
    import torch

    dtype = getattr(torch, dtype_name)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(dtype)
    b = torch.randn(size, size, generator=gen).to(dtype)
    for _ in range(2):
        torch.matmul(a, b)
    best, deadline, runs = float("inf"), time.perf_counter() + seconds, 0
    while time.perf_counter() < deadline or runs < 3:
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
        runs += 1
    return {"size": size, "runs": runs, "best_seconds": best, "flops_per_s": 2 * size**3 / best}
