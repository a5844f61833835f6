"""Code reward: run the completion's program against the record's tests, sandboxed.

The code is the last fenced block (```python ... ``` or ``` ... ```) of the completion, else the
whole text. Tests are a string of Python (asserts) or a list of such strings; the reward is the
fraction of tests that pass (0.0 when the program itself fails or times out).

Containment, each one layer (the child is a fresh ``python -I -B`` in a temporary directory):
  * wall time: killed with its whole process group after ``timeout`` s (and RLIMIT_CPU);
  * memory: RLIMIT_AS = ``memory_mb``;
  * processes: RLIMIT_NPROC = 1 and fork/exec/spawn/subprocess refused by an audit hook;
  * network: a fresh empty network namespace (``unshare -rn``) when available, and sockets
    refused by the audit hook in every case;
  * files: opening for writing, deleting or renaming outside the temporary directory refused by
    the audit hook; the directory is removed afterwards.
This contains accidents and the usual reward hacks of small models; it is not a security
boundary against code written to escape (an audit hook can be evaded by native code).
"""

from __future__ import annotations

import json
import os
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

RUNNER = Path(__file__).with_name("_sandbox_runner.py")
_FENCE = re.compile(r"```[ \t]*(?:[\w+-]+)?[ \t]*\n(.*?)```", re.DOTALL)


def extract_code(text: str) -> str:
    """The last fenced code block of ``text``, else ``text`` itself."""
    blocks = _FENCE.findall(text)
    return blocks[-1] if blocks else text


@dataclass(frozen=True)
class RunResult:
    passed: int
    total: int
    timed_out: bool
    stderr: str

    @property
    def score(self) -> float:
        return self.passed / self.total if self.total else 0.0


@cache
def _can_unshare() -> bool:
    exe = shutil.which("unshare")
    if exe is None:
        return False
    try:
        done = subprocess.run([exe, "-rn", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _limits(timeout: float, memory_mb: int) -> Any:
    def apply() -> None:  # runs in the child between fork and exec
        mem = memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        cpu = int(timeout) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 2**20, 16 * 2**20))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _parse(stdout: str, nonce: str, total: int) -> int:
    for line in reversed(stdout.splitlines()):
        parts = line.split()
        if len(parts) == 3 and parts[0] == nonce:
            return min(int(parts[1]), total)
    return 0


def run_tests(
    code: str, tests: str | Sequence[str], timeout: float = 5.0, memory_mb: int = 1024
) -> RunResult:
    """Run ``code`` then each test in a sandboxed child process (see the module docstring)."""
    test_list = [tests] if isinstance(tests, str) else list(tests)
    nonce = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="tunesmith-code-") as work:
        Path(work, "solution.py").write_text(code)
        Path(work, "tests.json").write_text(json.dumps(test_list))
        cmd = [sys.executable, "-I", "-B", str(RUNNER)]
        if _can_unshare():
            cmd = ["unshare", "-rn", *cmd]
        proc = subprocess.Popen(
            cmd,
            cwd=work,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8"},
            start_new_session=True,
            preexec_fn=_limits(timeout, memory_mb),
        )
        try:
            out, err = proc.communicate(nonce + "\n", timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            timed_out = True
    passed = 0 if timed_out else _parse(out, nonce, len(test_list))
    return RunResult(passed, len(test_list), timed_out, err[-2000:])


def code_reward(
    prompts: Sequence[Any],
    completions: Sequence[str],
    tests: Sequence[str | Sequence[str]],
    timeout: float = 5.0,
    memory_mb: int = 1024,
    workers: int = 2,
    **_: Any,
) -> list[float]:
    """Fraction of the record's ``tests`` that the completion's code passes."""

    def one(pair: tuple[str, str | Sequence[str]]) -> float:
        return run_tests(extract_code(pair[0]), pair[1], timeout, memory_mb).score

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, zip(completions, tests, strict=True)))
