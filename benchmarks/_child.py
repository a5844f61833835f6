"""One benchmark run as a subprocess: exit code, peak RSS, CPU time per step, load around it.

Peak RSS is the child's own ``ru_maxrss`` from ``os.wait4``. On a shared machine the wall time
of a step depends on what else runs, so the child's CPU time (all threads, from
``/proc/PID/stat``) is also sampled every ``interval`` seconds next to the number of training
lines in its ``metrics.jsonl``; the CPU time spent between two lines appearing is that step's
CPU time (to within about ``2 * interval * threads`` CPU-seconds). A process that is denied a
core for a while accrues no CPU time meanwhile, so this measure moves far less with load.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from _machine import load_average


@dataclass
class Child:
    """A finished subprocess."""

    rc: int
    wall_seconds: float
    cpu_seconds: float
    peak_rss_bytes: int
    load_before: list[float]
    load_after: list[float]
    step_cpu_seconds: list[float | None] = field(default_factory=list)


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process (all its threads), or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count_train_lines(path: Path) -> int:
    """Training-step records written so far to a tunesmith ``metrics.jsonl``."""
    try:
        with path.open(encoding="utf-8") as fh:
            return sum('"split": "train"' in line for line in fh)
    except OSError:
        return 0


def step_cpu_from_samples(samples: list[tuple[float, int]]) -> list[float | None]:
    """Per step, the CPU time between the samples at which its line and the previous one
    first appeared; step 1 has no previous line (its interval would include the setup)."""
    first_at: dict[int, float] = {}
    for cpu, lines in samples:
        for n in range(1, lines + 1):
            first_at.setdefault(n, cpu)
    steps = max(first_at, default=0)
    return [None] + [first_at[k] - first_at[k - 1] for k in range(2, steps + 1)]


def run_child(
    cmd: list[str],
    log: Path,
    env: dict[str, str],
    watch: Path | None = None,
    interval: float = 0.05,
) -> Child:
    """Run ``cmd`` to completion, output to ``log``; sample its CPU time against the training
    lines of ``watch`` (a metrics.jsonl) when given."""
    before = load_average()
    samples: list[tuple[float, int]] = []
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            cpu = proc_cpu_seconds(proc.pid) if watch is not None else None
            if cpu is not None and watch is not None:
                samples.append((cpu, count_train_lines(watch)))
            time.sleep(interval)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Child(
        rc=proc.returncode,
        wall_seconds=time.perf_counter() - t0,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_rss_bytes=usage.ru_maxrss * 1024,
        load_before=before,
        load_after=load_average(),
        step_cpu_seconds=step_cpu_from_samples(samples),
    )
