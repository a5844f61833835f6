"""The code reward's sandbox: correct code passes; loops, forks, writes, sockets are contained."""

from __future__ import annotations

import time
from pathlib import Path

from tunesmith.rewards.code import code_reward, extract_code, run_tests

TESTS = ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"]


def test_extract_code_takes_last_fence() -> None:
    text = "first\n```python\nx = 1\n```\nthen\n```\ndef f():\n    return 2\n```\n"
    assert extract_code(text) == "def f():\n    return 2\n"
    assert extract_code("plain = 3") == "plain = 3"


def test_correct_and_partly_wrong_code() -> None:
    good = "```python\ndef add(a, b):\n    return a + b\n```"
    half = "```python\ndef add(a, b):\n    return abs(a) + b\n```"  # fails add(-1, 1)
    assert code_reward(["", ""], [good, half], tests=[TESTS, TESTS]) == [1.0, 0.5]


def test_infinite_loop_is_killed_on_time() -> None:
    t0 = time.perf_counter()
    r = run_tests("while True:\n    pass\n", TESTS, timeout=1.0)
    assert r.timed_out and r.score == 0.0
    assert time.perf_counter() - t0 < 5


def test_fork_bomb_is_refused() -> None:
    code = "import os\nwhile True:\n    os.fork()\ndef add(a, b):\n    return a + b\n"
    r = run_tests(code, TESTS, timeout=3.0)
    assert r.score == 0.0 and not r.timed_out
    assert "os.fork is not allowed" in r.stderr


def test_subprocess_is_refused() -> None:
    code = "import subprocess\nsubprocess.run(['true'])\ndef add(a, b):\n    return a + b\n"
    r = run_tests(code, TESTS, timeout=3.0)
    assert r.score == 0.0 and "not allowed" in r.stderr


def test_write_outside_the_work_dir_does_not_happen(tmp_path: Path) -> None:
    target = tmp_path / "escaped.txt"
    code = (
        f"open({str(target)!r}, 'w').write('x')\n"
        "open('inside.txt', 'w').write('fine')\n"  # inside the temp dir: allowed
        "def add(a, b):\n    return a + b\n"
    )
    r = run_tests(code, TESTS, timeout=3.0)
    assert not target.exists()
    assert r.score == 0.0 and "outside the working directory" in r.stderr
    inside_only = "open('inside.txt', 'w').write('ok')\ndef add(a, b):\n    return a + b\n"
    assert run_tests(inside_only, TESTS, timeout=3.0).score == 1.0


def test_network_is_refused() -> None:
    code = (
        "import socket\nsocket.create_connection(('127.0.0.1', 9))\n"
        "def add(a, b):\n    return a + b\n"
    )
    r = run_tests(code, TESTS, timeout=3.0)
    assert r.score == 0.0 and "socket" in r.stderr


def test_memory_limit() -> None:
    code = "x = bytearray(4 * 2**30)\ndef add(a, b):\n    return a + b\n"
    r = run_tests(code, TESTS, timeout=3.0, memory_mb=256)
    assert r.score == 0.0 and "MemoryError" in r.stderr


def test_printing_a_fake_result_line_does_not_pass() -> None:
    code = "print('deadbeef 2 2')\nimport os\nos._exit(0)\n"
    assert run_tests(code, TESTS, timeout=3.0).score == 0.0
